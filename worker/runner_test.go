package worker

import (
	"slices"
	"strings"
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
// a runner and no goroutine. A runner is dropped with its task, once its task has ended, and one
// made for an event about a task the worker does not know is dropped once the event is applied:
// a worker tracking many tasks, most of them ended, keeps no goroutine and no runner for them.
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
	// An ended task's runner holds nothing its record does not say: it is dropped too, and the
	// task's next operation makes a new one.
	waitFor(t, waitTimeout, func() bool { exists, _ := runnerState(w, other.ID); return !exists }, "the ended task's runner dropped")
	if err := w.Stop(other.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, func() bool {
		got, _ := w.Get(other.ID)
		return got.ContainerID == "" && !slices.ContainsFunc(rt.Containers(), func(c task.Container) bool { return c.ID == other.ContainerID })
	}, "the stop of the ended task to remove its container")
	if got, _ := w.Get(other.ID); got.State != task.Completed {
		t.Errorf("after the stop: got %v, want Completed", got.State)
	}
}

// idleWithoutRunner reports whether every operation queued for the worker has been applied and
// task id has no runner.
func idleWithoutRunner(w *Worker, id uuid.UUID) bool {
	exists, _ := runnerState(w, id)
	return w.QueueLen() == 0 && !exists
}

// The runner of an ended task is dropped once idle whatever operation it applied last: one that
// wrote nothing (a late event about a container the task no longer has), and one whose task the
// runtime reported killed for lack of memory.
func TestRunnersOfEndedTasksAreDroppedWhateverTheyApplied(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Store: &MemoryStore{}})

	stopped := runTask(t, w, newTask())
	if err := w.Stop(stopped.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, stopped.ID, task.Completed)
	waitFor(t, waitTimeout, func() bool { return idleWithoutRunner(w, stopped.ID) }, "the stopped task's runner dropped")
	// The Engine's destroy event of the container the stop removed comes after the stop.
	w.enqueue(op{kind: opCheck, taskID: stopped.ID, containerID: stopped.ContainerID, reason: string(task.ContainerDestroyed)})
	waitFor(t, waitTimeout, func() bool { return idleWithoutRunner(w, stopped.ID) },
		"the runner made for the late destroy event dropped once it is applied")

	oom := runTask(t, w, newTask())
	if err := rt.Exit(oom.ContainerID, 137, true); err != nil {
		t.Fatal(err)
	}
	if got := waitState(t, w, oom.ID, task.Failed); !strings.HasPrefix(got.Error, "OOMKilled") {
		t.Errorf("OOM-killed task: got error %q, want OOMKilled", got.Error)
	}
	waitFor(t, waitTimeout, func() bool { return idleWithoutRunner(w, oom.ID) }, "the OOM-killed task's runner dropped")
}
