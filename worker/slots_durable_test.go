package worker_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// A worker shut down while starts wait for a start slot leaves their tasks Scheduled with their
// orders stored: the next worker on the same data dir starts each of them, once.
func TestShutdownLeavesStartsWaitingForASlotToTheNextWorker(t *testing.T) {
	const n = 3
	dir := t.TempDir()
	rt := workertest.New()
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rt.StartHook = func(ctx context.Context, _ task.Task) error {
		once.Do(func() { close(held) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	first := openStore(t, dir)
	w := worker.New(rt, worker.Config{Name: t.Name(), Concurrency: 1, Store: first, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	workertest.WaitReady(t, w, 30*time.Second)

	busy := scheduledTask()
	submitTask(t, w, busy)
	<-held
	var waiting []uuid.UUID
	for range n {
		spec := scheduledTask()
		waiting = append(waiting, spec.ID)
		submitTask(t, w, spec)
	}
	poll(t, func() bool { return w.QueueLen() == n }, "every start to wait for the slot")
	cancel()
	close(release) // the start under way finishes; the slot it gives back starts nothing more
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: got %v, want nil", err)
		}
	case <-time.After(workertest.StopTimeout):
		t.Fatal("Run did not return")
	}
	for _, id := range waiting {
		if got, _ := first.Get(id); got.State != task.Scheduled {
			t.Errorf("task %s after shutdown: got %v, want Scheduled", id, got.State)
		}
	}
	if got := len(first.Orders()); got != n {
		t.Errorf("orders stored after shutdown: got %d, want %d (the waiting starts')", got, n)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	rt.StartHook = nil
	second := openStore(t, dir)
	t.Cleanup(func() { second.Close() })
	next := worker.New(rt, worker.Config{Name: t.Name(), Concurrency: 1, Store: second, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	workertest.Start(t, next, 30*time.Second)
	for _, id := range append([]uuid.UUID{busy.ID}, waiting...) {
		poll(t, func() bool { got, err := next.Get(id); return err == nil && got.State == task.Running }, "the task to run")
	}
	poll(t, func() bool { return len(second.Orders()) == 0 && next.QueueLen() == 0 }, "every order done")
	starts := map[uuid.UUID]int{}
	for _, s := range rt.Starts() {
		starts[s.ID]++
	}
	for _, id := range append([]uuid.UUID{busy.ID}, waiting...) {
		if starts[id] != 1 {
			t.Errorf("starts of task %s: got %d, want 1", id, starts[id])
		}
	}
}

func openStore(tb testing.TB, dir string) *boltstore.Store {
	tb.Helper()
	s, err := boltstore.OpenDir(dir, boltstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// scheduledTask returns a new task to submit, as benchTask without what the worker reports.
func scheduledTask() task.Task {
	t := benchTask()
	t.State = task.Scheduled
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	return t
}

func submitTask(tb testing.TB, w *worker.Worker, t task.Task) {
	tb.Helper()
	if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Running, Task: t}); err != nil {
		tb.Fatalf("Submit: got %v, want nil", err)
	}
}

// poll waits up to 30 s for cond, failing the test with what it waited for.
func poll(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
