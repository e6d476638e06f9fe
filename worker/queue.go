package worker

import "github.com/golang-collections/collections/queue"

// opQueue is a first-in, first-out queue of operations: the worker's intake, where every
// accepted operation waits for the loop to hand it to its task's runner (a runner's own backlog
// is a slice it owns). It is golang-collections' queue with its type restored, so that no reader
// casts. Like that queue it is not safe for concurrent use: its user holds Worker.mu.
type opQueue struct{ q *queue.Queue }

func newOpQueue() opQueue { return opQueue{q: queue.New()} }

// push adds o at the back.
func (q opQueue) push(o op) { q.q.Enqueue(o) }

// pop removes and returns the operation at the front; the queue must not be empty.
func (q opQueue) pop() op { return q.q.Dequeue().(op) }

// len returns the number of operations queued.
func (q opQueue) len() int { return q.q.Len() }
