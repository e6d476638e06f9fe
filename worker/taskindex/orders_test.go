package taskindex_test

import (
	"slices"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
)

func TestFindOrder(t *testing.T) {
	orders := []task.Order{{Seq: 2}, {Seq: 3}, {Seq: 7}, {Seq: 9}}
	for _, tc := range []struct {
		seq  uint64
		at   int
		want bool
	}{{2, 0, true}, {3, 1, true}, {7, 2, true}, {9, 3, true}, {1, 0, false}, {5, 2, false}, {10, 4, false}} {
		at, ok := taskindex.FindOrder(orders, tc.seq)
		if ok != tc.want || (ok && at != tc.at) {
			t.Errorf("FindOrder(%d): got %d, %v; want %d, %v", tc.seq, at, ok, tc.at, tc.want)
		}
	}
	if _, ok := taskindex.FindOrder(nil, 1); ok {
		t.Error("FindOrder in no orders: found")
	}
}

func TestDeleteOrder(t *testing.T) {
	seqs := func(orders []task.Order) []uint64 {
		var out []uint64
		for _, o := range orders {
			out = append(out, o.Seq)
		}
		return out
	}
	orders := []task.Order{{Seq: 2}, {Seq: 3}, {Seq: 7}, {Seq: 9}}
	for _, step := range []struct {
		seq  uint64
		want []uint64
	}{{5, []uint64{2, 3, 7, 9}}, {7, []uint64{2, 3, 9}}, {2, []uint64{3, 9}}, {9, []uint64{3}}, {3, nil}, {3, nil}} {
		orders = taskindex.DeleteOrder(orders, step.seq)
		if got := seqs(orders); !slices.Equal(got, step.want) {
			t.Fatalf("after deleting %d: got %v, want %v", step.seq, got, step.want)
		}
	}
}
