package worker

import (
	"sync"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/google/uuid"
)

// Store keeps every task the worker knows, the orders it accepted and has not yet applied, and
// the event IDs it has accepted. Implementations are safe for concurrent use and hand out
// copies: changing a task a Store returned never changes the stored one. Reads come from memory
// and cannot fail; a durable Store writes through to disk before a write returns.
//
// A stored task is immutable: Put stores a copy of its own and replaces it whole on the next Put,
// never changing it in place. So Snapshot can hand out shallow copies (a Task value each, sharing
// the stored task's maps, slices and pointers), which stay valid and unchanging however the store
// changes after, and which any number of readers may read without a lock. Readers must not write
// through them: that is the price of a list that copies nothing it does not send.
type Store interface {
	// Get returns a copy of the task with the given ID, and whether there is one.
	Get(id uuid.UUID) (task.Task, bool)
	// Put stores a copy of t, replacing any task with its ID.
	Put(t task.Task) error
	// List returns copies of all tasks, in the order they were first stored.
	List() []task.Task
	// Snapshot appends all tasks to dst, in List's order, as shallow copies, and returns the
	// extended slice: each Task's own fields may be set, but its maps, slices and pointers are the
	// stored task's and must not be written.
	Snapshot(dst []task.Task) []task.Task
	// Refs appends pointers to all stored tasks to dst, in List's order, and returns the extended
	// slice. The tasks are immutable: what a pointer points to never changes, and no one may
	// write through it. For a reader that copies each task as it goes (Worker.Each).
	Refs(dst []*task.Task) []*task.Task
	// Len returns the number of tasks stored.
	Len() int
	// Count returns the number of tasks stored in state s, in O(1) for the states there are.
	Count(s task.State) int
	// Claimed returns what the tasks that have not ended (neither Completed nor Failed) claim of
	// the worker's capacity, leaving out the task with the ID except (uuid.Nil: none), in O(1).
	Claimed(except uuid.UUID) taskindex.Claims
	// Delete forgets the task with the given ID and the event IDs accepted for it; an unknown ID
	// is not an error.
	Delete(id uuid.UUID) error

	// Accept records an accepted order, atomically: t (when not nil, a new task), the order
	// (its Seq is assigned and returned), and, for a start, its event ID as seen for the task.
	Accept(t *task.Task, o task.Order) (task.Order, error)
	// Done forgets the order with the given Seq once it has been applied.
	Done(seq uint64) error
	// Orders returns the orders not yet done, in the order they were accepted.
	Orders() []task.Order
	// Seen returns the task an event ID was accepted for, and whether it was.
	Seen(eventID uuid.UUID) (uuid.UUID, bool)
	// Close releases the store. A closed store must not be used.
	Close() error
}

// MemoryStore is a Store held in memory: a worker that restarts finds it empty. The zero value
// is ready to use.
type MemoryStore struct {
	mu     sync.RWMutex
	index  taskindex.Index
	orders []task.Order
	seq    uint64
}

var _ Store = (*MemoryStore)(nil)

// Get returns a copy of the task with the given ID, and whether there is one.
func (s *MemoryStore) Get(id uuid.UUID) (task.Task, bool) {
	s.mu.RLock()
	e, ok := s.index.Get(id)
	s.mu.RUnlock()
	if !ok {
		return task.Task{}, false
	}
	return e.Task.Clone(), true // the stored task is immutable: cloning it needs no lock
}

// Put stores a copy of t. It never fails.
func (s *MemoryStore) Put(t task.Task) error {
	t = t.Clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index.Put(t, 0)
	return nil
}

// List returns copies of all tasks in the order they were first stored.
func (s *MemoryStore) List() []task.Task {
	list := s.Snapshot(nil)
	for i := range list {
		list[i] = list[i].Clone()
	}
	return list
}

// Snapshot appends all tasks to dst in the order they were first stored, as shallow copies that
// share the stored tasks' maps and slices, which must not be written.
func (s *MemoryStore) Snapshot(dst []task.Task) []task.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Snapshot(dst)
}

// Refs appends pointers to the stored tasks to dst, in the order they were first stored. No one
// may write through them.
func (s *MemoryStore) Refs(dst []*task.Task) []*task.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Refs(dst)
}

// Len returns the number of tasks stored.
func (s *MemoryStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Len()
}

// Count returns the number of tasks stored in state st.
func (s *MemoryStore) Count(st task.State) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Count(st)
}

// Claimed returns what the tasks that have not ended claim, but for the task except.
func (s *MemoryStore) Claimed(except uuid.UUID) taskindex.Claims {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Claimed(except)
}

// Delete forgets the task with the given ID. It never fails.
func (s *MemoryStore) Delete(id uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index.Delete(id)
	return nil
}

// Accept records an accepted order, and t when it is not nil, in one step: no reader sees the
// task without its order. It never fails.
func (s *MemoryStore) Accept(t *task.Task, o task.Order) (task.Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t != nil {
		s.index.Put(t.Clone(), 0)
	}
	s.seq++
	o.Seq = s.seq
	o = cloneOrder(o)
	if o.Event != nil {
		s.index.See(o.Event.ID, o.TaskID)
	}
	s.orders = append(s.orders, o)
	return cloneOrder(o), nil
}

// cloneOrder returns a copy of o that shares nothing with it.
func cloneOrder(o task.Order) task.Order {
	if o.Event != nil {
		ev := *o.Event
		ev.Task = ev.Task.Clone()
		o.Event = &ev
	}
	return o
}

// Done forgets the order seq. It never fails.
func (s *MemoryStore) Done(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orders = taskindex.DeleteOrder(s.orders, seq)
	return nil
}

// Orders returns copies of the orders not yet done; never nil.
func (s *MemoryStore) Orders() []task.Order {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]task.Order, 0, len(s.orders))
	for _, o := range s.orders {
		out = append(out, cloneOrder(o))
	}
	return out
}

// Seen returns the task an event ID was accepted for.
func (s *MemoryStore) Seen(eventID uuid.UUID) (uuid.UUID, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Seen(eventID)
}

// Close does nothing.
func (s *MemoryStore) Close() error { return nil }
