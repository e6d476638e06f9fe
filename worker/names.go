package worker

import (
	"sync"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// names knows which task holds each name among the tasks that have not ended, so that Submit
// checks a name without listing the store. It follows every write of a task: the store's tasks
// when the worker is made, new tasks, modify, and tasks rebuilt from the runtime. (Forgotten
// tasks have ended, and so hold no name.)
type names struct {
	mu sync.Mutex
	m  map[string]uuid.UUID
}

// holds reports whether t holds its name: it has one and has not ended.
func holds(t task.Task) bool {
	return t.Name != "" && !t.State.Ended()
}

// update notes that the task went from before (the zero Task for a new one) to after.
func (n *names) update(before, after task.Task) {
	if holds(before) == holds(after) && before.Name == after.Name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]uuid.UUID)
	}
	if holds(before) && n.m[before.Name] == before.ID {
		delete(n.m, before.Name)
	}
	if holds(after) {
		n.m[after.Name] = after.ID
	}
}

// holder returns the task that holds name, if any.
func (n *names) holder(name string) (uuid.UUID, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	id, ok := n.m[name]
	return id, ok
}
