package worker

import (
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// runnerState returns whether the worker has a runner for task id, and whether its goroutine
// runs.
func runnerState(w *Worker, id uuid.UUID) (exists, active bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.runners[id]
	return r != nil, r != nil && r.active
}

// A runner's goroutine runs only while it has work: a task that runs and has nothing queued has
// a runner and no goroutine. A runner is dropped with its task, and one made for an event about
// a task the worker does not know is dropped once the event is applied: a worker tracking many
// tasks keeps no goroutine for them, and no runner for what it does not track.
func TestRunnersLiveWithTheirWork(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store})
	run := runTask(t, w, newTask())
	waitFor(t, waitTimeout, func() bool {
		exists, active := runnerState(w, run.ID)
		return exists && !active
	}, "the running task's runner to be idle, without a goroutine")

	stranger := rt.Add(task.Container{TaskID: uuid.New(), Running: true})
	if err := rt.Exit(stranger.ID, 0, false); err != nil {
		t.Fatal(err)
	}
	// The stranger's die event comes before this one, and is routed before it.
	other := runTask(t, w, newTask())
	if err := rt.Exit(other.ContainerID, 0, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, other.ID, task.Completed)
	waitFor(t, waitTimeout, func() bool { exists, _ := runnerState(w, stranger.TaskID); return !exists },
		"the runner made for an unknown task's event dropped")

	if err := w.Remove(run.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(run.ID); return !ok }, "the removed task forgotten")
	waitFor(t, waitTimeout, func() bool { exists, _ := runnerState(w, run.ID); return !exists }, "the removed task's runner dropped")
	if exists, active := runnerState(w, other.ID); !exists || active {
		t.Errorf("the ended task's runner: exists %v, active %v; want it kept, idle", exists, active)
	}
}
