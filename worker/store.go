package worker

import (
	"slices"
	"sync"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Store keeps every task the worker knows, the orders it accepted and has not yet applied, and
// the event IDs it has accepted. Implementations are safe for concurrent use and hand out
// copies: changing a task a Store returned never changes the stored one. Reads come from memory
// and cannot fail; a durable Store writes through to disk before a write returns.
type Store interface {
	// Get returns a copy of the task with the given ID, and whether there is one.
	Get(id uuid.UUID) (task.Task, bool)
	// Put stores a copy of t, replacing any task with its ID.
	Put(t task.Task) error
	// List returns copies of all tasks, in the order they were first stored.
	List() []task.Task
	// Len returns the number of tasks stored.
	Len() int
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
	tasks  map[uuid.UUID]task.Task
	order  []uuid.UUID
	orders []task.Order
	seq    uint64
	seen   map[uuid.UUID]uuid.UUID // event ID → task ID
}

var _ Store = (*MemoryStore)(nil)

// Get returns a copy of the task with the given ID, and whether there is one.
func (s *MemoryStore) Get(id uuid.UUID) (task.Task, bool) {
	s.mu.RLock()
	t, ok := s.tasks[id]
	s.mu.RUnlock()
	if !ok {
		return task.Task{}, false
	}
	return t.Clone(), true
}

// Put stores a copy of t. It never fails.
func (s *MemoryStore) Put(t task.Task) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(t)
	return nil
}

func (s *MemoryStore) putLocked(t task.Task) {
	t = t.Clone()
	if s.tasks == nil {
		s.tasks = make(map[uuid.UUID]task.Task)
	}
	if _, ok := s.tasks[t.ID]; !ok {
		s.order = append(s.order, t.ID)
	}
	s.tasks[t.ID] = t
}

// List returns copies of all tasks in the order they were first stored.
func (s *MemoryStore) List() []task.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]task.Task, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.tasks[id].Clone())
	}
	return out
}

// Len returns the number of tasks stored.
func (s *MemoryStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.tasks)
}

// Delete forgets the task with the given ID. It never fails.
func (s *MemoryStore) Delete(id uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tasks[id]; !ok {
		return nil
	}
	delete(s.tasks, id)
	s.order = slices.DeleteFunc(s.order, func(x uuid.UUID) bool { return x == id })
	for ev, tid := range s.seen {
		if tid == id {
			delete(s.seen, ev)
		}
	}
	return nil
}

// Accept records an accepted order, and t when it is not nil, in one step: no reader sees the
// task without its order. It never fails.
func (s *MemoryStore) Accept(t *task.Task, o task.Order) (task.Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t != nil {
		s.putLocked(*t)
	}
	s.seq++
	o.Seq = s.seq
	o = cloneOrder(o)
	if o.Event != nil {
		if s.seen == nil {
			s.seen = make(map[uuid.UUID]uuid.UUID)
		}
		s.seen[o.Event.ID] = o.TaskID
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
	s.orders = slices.DeleteFunc(s.orders, func(o task.Order) bool { return o.Seq == seq })
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
	id, ok := s.seen[eventID]
	return id, ok
}

// Close does nothing.
func (s *MemoryStore) Close() error { return nil }
