package worker

import (
	"slices"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// A container made for a start and never started (the worker died in between) is started when
// the worker comes back without a record of it: the task is rebuilt, runs in that container,
// and is never taken for an exit.
func TestCreatedNeverStartedIsStarted(t *testing.T) {
	rt := workertest.New()
	spec := newTask()
	spec.LastEvent = uuid.NewString()
	spec.RestartCount = 2
	made := rt.Create(spec)
	w := startWorker(t, rt, Config{})
	got := waitTask(t, w, spec, "rebuilt and running", func(t task.Task) bool { return t.State == task.Running })
	if got.ContainerID != made.ID || got.RestartCount != 2 || got.LastEvent != spec.LastEvent {
		t.Errorf("rebuilt task: container %s, RestartCount %d, LastEvent %s; want %s, 2, %s",
			got.ContainerID, got.RestartCount, got.LastEvent, made.ID, spec.LastEvent)
	}
	for _, r := range got.Events {
		if r.Type == task.RecordExited {
			t.Errorf("records %v: an exit of a container that never ran", got.Events)
		}
	}
	if cs := rt.Containers(); len(cs) != 1 || !cs[0].Running {
		t.Errorf("containers %+v, want the one made, running", cs)
	}
}

// The worker removes a container only when its records prove it unwanted: a second container of
// a task that ended, and one of an earlier start of a task than its current one. A container of
// a task it has no record of and cannot rebuild is left alone, and so are the tasks' own.
func TestRemovesOnlyWhatItCanProve(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	put := func(tk task.Task) {
		if err := store.Put(tk); err != nil {
			t.Fatal(err)
		}
	}
	ended := newTask()
	ended.LastEvent = uuid.NewString()
	own := rt.Add(task.Container{TaskID: ended.ID, EventID: ended.LastEvent, StartedAt: time.Now(), FinishedAt: time.Now(), Spec: &ended})
	ended.State, ended.ContainerID, ended.FinishTime = task.Completed, own.ID, time.Now() // just ended: retention keeps it
	put(ended)
	stray := rt.Add(task.Container{TaskID: ended.ID, EventID: ended.LastEvent, Running: true, StartedAt: time.Now(), Spec: &ended})

	running := newTask()
	running.LastEvent = uuid.NewString()
	running.RestartCount = 1
	current := rt.Add(task.Container{TaskID: running.ID, EventID: running.LastEvent, Running: true, StartedAt: time.Now(), Spec: &running})
	running.State, running.ContainerID = task.Running, current.ID
	put(running)
	before := running
	before.RestartCount = 0 // the run before the last restart
	restarted := rt.Add(task.Container{TaskID: running.ID, EventID: running.LastEvent, Running: true, StartedAt: time.Now(), Spec: &before})
	before.LastEvent = uuid.NewString() // an earlier event's start
	replaced := rt.Add(task.Container{TaskID: running.ID, EventID: before.LastEvent, Running: true, StartedAt: time.Now(), Spec: &before})

	unknown := rt.Add(task.Container{TaskID: uuid.New(), EventID: uuid.NewString(), Running: true, StartedAt: time.Now()})

	w := startWorker(t, rt, Config{Store: store, OrphanGrace: time.Millisecond, ReconcileInterval: 5 * time.Millisecond})
	present := func() map[string]bool {
		ids := map[string]bool{}
		for _, c := range rt.Containers() {
			ids[c.ID] = true
		}
		return ids
	}
	waitFor(t, waitTimeout, func() bool {
		ids := present()
		return !ids[stray.ID] && !ids[restarted.ID] && !ids[replaced.ID]
	}, "the stray and the superseded containers to be removed")
	// What is left stays, through the reconciles of the next 100 ms (one every 5 ms).
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		ids := present()
		for id, what := range map[string]string{own.ID: "the ended task's own", current.ID: "the running task's", unknown.ID: "the unknown task's"} {
			if !ids[id] {
				t.Fatalf("%s container %s was removed", what, id)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := w.Get(running.ID); got.State != task.Running || got.ContainerID != current.ID {
		t.Errorf("running task: %v in %s, want Running in %s", got.State, got.ContainerID, current.ID)
	}
	if _, err := w.Get(unknown.TaskID); err == nil {
		t.Error("the container with no spec label made a task")
	}
}

// A restart accepted (201) when the worker died, after the dead worker had stopped the old
// container for it and before it made the new one, is applied by the next worker: the stopped
// container is not taken for the task's end.
func TestRestartAcceptedBeforeACrashIsApplied(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	spec := newTask()
	spec.LastEvent = uuid.NewString()
	old := rt.Add(task.Container{TaskID: spec.ID, EventID: spec.LastEvent, StartedAt: time.Now(), FinishedAt: time.Now(), Spec: &spec})
	run := spec
	run.State, run.ContainerID = task.Running, old.ID
	if err := store.Put(run); err != nil {
		t.Fatal(err)
	}
	again := spec
	again.RestartCount = 2
	ev := eventFor(again)
	if _, err := store.Accept(nil, task.Order{Kind: task.OrderStart, TaskID: spec.ID, Event: &ev}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, rt, Config{Store: store, OrphanGrace: time.Hour})
	got := waitTask(t, w, spec, "restarted by the accepted event", func(t task.Task) bool {
		return t.State == task.Running && t.RestartCount == 2
	})
	if got.ContainerID == old.ID || !slices.Contains(rt.Running(), got.ContainerID) {
		t.Errorf("container: got %s (running %v), want a new one running", got.ContainerID, rt.Running())
	}
}

// A stop accepted (204) while a start was under way, the worker dying after the Engine started
// the start's container and before the task recorded it: the next worker's stop removes that
// container with the stop, not after the orphan grace.
func TestStopAcceptedDuringAStartRemovesItsContainer(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	spec := newTask()
	spec.LastEvent = uuid.NewString()
	spec.State = task.Scheduled
	made := rt.Add(task.Container{TaskID: spec.ID, EventID: spec.LastEvent, Running: true, StartedAt: time.Now(), Spec: &spec})
	if err := store.Put(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Accept(nil, task.Order{Kind: task.OrderStop, TaskID: spec.ID}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, rt, Config{Store: store, OrphanGrace: time.Hour})
	waitState(t, w, spec.ID, task.Completed)
	waitFor(t, waitTimeout, func() bool { return !containerExists(rt, made.ID) }, "the start's container removed with the stop")
}
