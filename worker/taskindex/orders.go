package taskindex

import (
	"cmp"
	"slices"

	"github.com/cube-orchestrator/cube/task"
)

// FindOrder returns the position of the order numbered seq in orders, which both stores keep in
// Seq order (they number orders as they accept them and only ever append), and whether it is
// there. A store marks an order done by its number, once per order: a walk of every order would
// make a burst of 10,000 queued starts cost 10,000² comparisons.
func FindOrder(orders []task.Order, seq uint64) (int, bool) {
	return slices.BinarySearchFunc(orders, seq, func(o task.Order, seq uint64) int { return cmp.Compare(o.Seq, seq) })
}

// DeleteOrder returns orders without the order numbered seq, if it is there. Orders are mostly
// done oldest first, so the first goes without moving the rest: the slice starts one further on
// (its array's spare room is the store's to give back).
func DeleteOrder(orders []task.Order, seq uint64) []task.Order {
	i, ok := FindOrder(orders, seq)
	switch {
	case !ok:
		return orders
	case i == 0:
		orders[0] = task.Order{} // let go of its event
		return orders[1:]
	default:
		return slices.Delete(orders, i, i+1)
	}
}
