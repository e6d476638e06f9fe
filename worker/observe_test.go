package worker

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// logsOf reads the whole output w.Logs returns.
func logsOf(tb testing.TB, w *Worker, id uuid.UUID, opts task.LogOptions) string {
	tb.Helper()
	rc, err := w.Logs(context.Background(), id, opts)
	if err != nil {
		tb.Fatalf("Logs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		tb.Fatalf("Logs: read: %v", err)
	}
	return string(b)
}

func TestLogsOfARunningAndAnEndedTask(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	rt.Print(run.ContainerID, "one", "two", "three")

	got := logsOf(t, w, spec.ID, task.LogOptions{})
	if got != "one\ntwo\nthree\n" {
		t.Errorf("Logs: got %q, want three lines", got)
	}
	got = logsOf(t, w, spec.ID, task.LogOptions{Tail: 1})
	if got != "three\n" {
		t.Errorf("Logs tail 1: got %q, want the last line", got)
	}

	// Following ends when the container ends.
	rc, err := w.Logs(context.Background(), spec.ID, task.LogOptions{Follow: true, Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() { b, _ := io.ReadAll(rc); done <- string(b) }()
	rt.Print(run.ContainerID, "four")
	rt.Exit(run.ContainerID, 3, false)
	select {
	case got := <-done:
		if got != "four\n" {
			t.Errorf("followed: got %q, want only the new line", got)
		}
	case <-time.After(waitTimeout):
		t.Fatal("following did not end with the container")
	}
	rc.Close()

	// The task ended; its container is kept, and so is its output.
	waitState(t, w, spec.ID, task.Failed)
	got = logsOf(t, w, spec.ID, task.LogOptions{})
	if got != "one\ntwo\nthree\nfour\n" {
		t.Errorf("Logs of the ended task: got %q, want all four lines", got)
	}
	if _, err := w.TaskStats(context.Background(), spec.ID); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("TaskStats of the ended task: got %v, want ECONFLICT", err)
	}

	// Once the task is stopped its container is removed: no output left.
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, func() bool { tk, _ := w.Get(spec.ID); return tk.ContainerID == "" }, "the container's removal")
	if _, err := w.Logs(context.Background(), spec.ID, task.LogOptions{}); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("Logs without a container: got %v, want ECONFLICT", err)
	}
}

func TestLogsAndStatsErrors(t *testing.T) {
	rt, w := newWorker(t)
	if _, err := w.Logs(context.Background(), uuid.New(), task.LogOptions{}); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Logs of an unknown task: got %v, want ENOTFOUND", err)
	}
	if _, err := w.TaskStats(context.Background(), uuid.New()); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("TaskStats of an unknown task: got %v, want ENOTFOUND", err)
	}

	// A task still starting has no container.
	release := make(chan struct{})
	defer close(release)
	rt.StartHook = func(ctx context.Context, _ task.Task) error { <-release; return nil }
	spec := newTask()
	submit(t, w, eventFor(spec))
	if _, err := w.Logs(context.Background(), spec.ID, task.LogOptions{}); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("Logs of a task not started: got %v, want ECONFLICT", err)
	}
	if _, err := w.TaskStats(context.Background(), spec.ID); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("TaskStats of a task not started: got %v, want ECONFLICT", err)
	}
}

func TestTaskStats(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	s, err := w.TaskStats(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := workertest.DefaultStats()
	want.TaskID, want.ContainerID, want.Time = spec.ID, run.ContainerID, s.Time
	if s != want || s.Time.IsZero() {
		t.Errorf("TaskStats: got %+v, want %+v", s, want)
	}

	// A container removed behind the worker's back: not running.
	rt.InspectErr = nil
	if err := rt.Remove(context.Background(), run.ContainerID); err != nil {
		t.Fatal(err)
	}
	if _, err := w.TaskStats(context.Background(), spec.ID); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("TaskStats after the container vanished: got %v, want ECONFLICT", err)
	}
}
