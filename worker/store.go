package worker

import (
	"slices"
	"sync"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Store keeps every task the worker knows. Implementations are safe for concurrent use and hand
// out copies: changing a task a Store returned never changes the stored one.
type Store interface {
	// Get returns a copy of the task with the given ID, and whether there is one.
	Get(id uuid.UUID) (task.Task, bool)
	// Put stores a copy of t, replacing any task with its ID.
	Put(t task.Task) error
	// List returns copies of all tasks, in the order they were first stored.
	List() []task.Task
	// Len returns the number of tasks stored.
	Len() int
	// Delete forgets the task with the given ID; an unknown ID is not an error.
	Delete(id uuid.UUID) error
}

// MemoryStore is a Store held in memory. The zero value is ready to use.
type MemoryStore struct {
	mu    sync.RWMutex
	tasks map[uuid.UUID]task.Task
	order []uuid.UUID
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
	t = t.Clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tasks == nil {
		s.tasks = make(map[uuid.UUID]task.Task)
	}
	if _, ok := s.tasks[t.ID]; !ok {
		s.order = append(s.order, t.ID)
	}
	s.tasks[t.ID] = t
	return nil
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
	return nil
}
