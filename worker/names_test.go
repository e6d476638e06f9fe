package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// A name picks out one task among those that have not ended: a second task may not take it
// while the first runs or waits to restart, and may once the first has ended. A restart event
// of the holder keeps its name.
func TestNamesUniqueAmongTasksNotEnded(t *testing.T) {
	_, w := newWorker(t)
	first := newTask()
	first.Name = "web"
	runTask(t, w, first)

	second := newTask()
	second.Name = "web"
	_, err := w.Submit(eventFor(second))
	if task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), first.ID.String()) ||
		!strings.HasPrefix(task.ErrorMessage(err), `Task.Name: "web" is the name of task `) {
		t.Fatalf("a second task named web: got %v, want a conflict naming %s", err, first.ID)
	}
	if _, err := w.Get(second.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("the refused task: got %v, want it unknown", err)
	}

	// A restart event of the holder keeps its name, and is no conflict.
	again := first
	again.Env = []string{"A=2"}
	submit(t, w, eventFor(again))
	waitTask(t, w, first, "restarted", func(t task.Task) bool {
		return t.State == task.Running && t.RestartCount == 0 && len(t.Env) == 1 && t.Env[0] == "A=2"
	})

	// Once the holder has ended, the name is free.
	if err := w.Stop(first.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, first.ID, task.Completed)
	runTask(t, w, second)

	// Two submits at once: exactly one gets the name.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			tk := newTask()
			tk.Name = "race"
			_, err := w.Submit(eventFor(tk))
			errs <- err
		}()
	}
	var won int
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
			won++
		case task.ErrorCode(err) != task.ECONFLICT:
			t.Errorf("a racing submit: got %v, want nil or a conflict", err)
		}
	}
	if won != 1 {
		t.Errorf("racing submits of one name: %d accepted, want 1", won)
	}
}

// Readiness names the runtime, by the name the worker was configured with, both when it stops
// answering and when it does not answer while the worker recovers its tasks at start.
func TestReadyNamesTheRuntime(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{RuntimeName: "the Docker Engine", PingInterval: 10 * time.Millisecond})
	rt.SetPingErr(errDown)
	waitFor(t, waitTimeout, func() bool { return w.Ready(context.Background()) != nil }, "the worker to notice the runtime is down")
	err := w.Ready(context.Background())
	if want := "the Docker Engine does not answer: Cannot connect to the Docker daemon"; task.ErrorCode(err) != task.EUNAVAILABLE || err.Error() != want {
		t.Errorf("Ready with the Engine down: got %q, want %q", err, want)
	}
	spec := newTask()
	submit(t, w, eventFor(spec))
	got, _ := w.Get(spec.ID)
	if !strings.HasPrefix(got.Unconfirmed, "the Docker Engine has not answered since ") {
		t.Errorf("Unconfirmed: got %q, want it to name the Docker Engine", got.Unconfirmed)
	}
	rt.SetPingErr(nil)
	waitFor(t, waitTimeout, func() bool { return w.Ready(context.Background()) == nil }, "the worker to see the runtime back")

	// At start, before the tasks are recovered.
	down := &listFails{Runtime: workertest.New(), err: errDown}
	w2 := New(down, Config{Logger: testLogger(t), RuntimeName: "the Docker Engine"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w2.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	want := "the Docker Engine does not answer, so the worker cannot recover its tasks yet: Cannot connect to the Docker daemon"
	waitFor(t, waitTimeout, func() bool { err := w2.Ready(context.Background()); return err != nil && err.Error() == want },
		"Ready to say "+want)
	if _, err := w2.Get(uuid.New()); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("the API still answers while recovery waits: got %v", err)
	}
}

// listFails is a runtime whose List fails: recovery at start waits for it.
type listFails struct {
	*workertest.Runtime
	err error
}

func (r *listFails) List(ctx context.Context) ([]task.Container, error) { return nil, r.err }

// The names of the tasks a worker finds in its store when it is made (a durable store after a
// restart) are held too; a task that ends there frees its name.
func TestNamesOfStoredTasksHeld(t *testing.T) {
	store := &MemoryStore{}
	held := newTask()
	held.State = task.Running
	if err := store.Put(held); err != nil {
		t.Fatal(err)
	}
	done := newTask()
	done.State = task.Completed
	if err := store.Put(done); err != nil {
		t.Fatal(err)
	}
	w := New(workertest.New(), Config{Logger: testLogger(t), Store: store})
	again := newTask()
	again.Name = held.Name
	if _, err := w.Submit(eventFor(again)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), held.ID.String()) {
		t.Errorf("a name a stored Running task holds: got %v, want a conflict naming %s", err, held.ID)
	}
	reuse := newTask()
	reuse.Name = done.Name
	submit(t, w, eventFor(reuse))
}

// A Failed task whose name another task took since may not be restarted under that name.
func TestRestartOfAFailedTaskWhoseNameIsTaken(t *testing.T) {
	rt, w := newWorker(t)
	a := newTask()
	a.Name = "web"
	run := runTask(t, w, a)
	if err := rt.Exit(run.ContainerID, 1, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, a.ID, task.Failed)
	b := newTask()
	b.Name = "web"
	runTask(t, w, b)
	_, err := w.Submit(eventFor(a))
	if task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), b.ID.String()) {
		t.Errorf("restart of a Failed task whose name is taken: got %v, want a conflict naming %s", err, b.ID)
	}
	renamed := a
	renamed.Name = "web-again"
	submit(t, w, eventFor(renamed))
	waitTask(t, w, a, "restarted under its new name", func(t task.Task) bool { return t.State == task.Running && t.Name == "web-again" })
}

// A restart holds its name from when it is accepted: a new task may not take the name of an
// ended task whose restart is accepted and not yet applied.
func TestRestartHoldsItsNameWhenAccepted(t *testing.T) {
	store := &MemoryStore{}
	old := newTask()
	old.Name = "web"
	old.State = task.Failed
	if err := store.Put(old); err != nil {
		t.Fatal(err)
	}
	w := New(workertest.New(), Config{Store: store, Logger: testLogger(t)}) // not running: nothing is applied
	again := old
	again.State = task.Scheduled
	submit(t, w, eventFor(again))
	other := newTask()
	other.Name = "web"
	_, err := w.Submit(eventFor(other))
	if task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), old.ID.String()) {
		t.Errorf("a new task named as a task whose restart is accepted: got %v, want ECONFLICT naming %s", err, old.ID)
	}
}

// Rebuilt from their containers, two tasks with one name: the one whose container runs holds
// the name, whatever the order they are rebuilt in, and keeps it once the other is found ended.
func TestRebuiltTasksNameHeldByTheRunningOne(t *testing.T) {
	for range 10 { // the rebuild goes through a map: try several orders
		rt := workertest.New()
		ended, running := newTask(), newTask()
		ended.Name, running.Name = "web", "web"
		ended.LastEvent, running.LastEvent = uuid.NewString(), uuid.NewString()
		rt.Add(task.Container{TaskID: ended.ID, EventID: ended.LastEvent, StartedAt: time.Now(), FinishedAt: time.Now(), ExitCode: 1, Spec: &ended})
		run := rt.Add(task.Container{TaskID: running.ID, EventID: running.LastEvent, Running: true, StartedAt: time.Now(), Spec: &running})
		w := startWorker(t, rt, Config{})
		waitState(t, w, ended.ID, task.Failed)
		if got, err := w.Get(running.ID); err != nil || got.State != task.Running || got.ContainerID != run.ID {
			t.Fatalf("the running task: got %+v, %v", got, err)
		}
		other := newTask()
		other.Name = "web"
		if _, err := w.Submit(eventFor(other)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), running.ID.String()) {
			t.Fatalf("a new task named as the running rebuilt one: got %v, want ECONFLICT naming %s", err, running.ID)
		}
	}
}
