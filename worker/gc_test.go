package worker

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// endTask runs a new task to its exit with code 0 and returns it, Completed with its container.
func endTask(tb testing.TB, rt *workertest.Runtime, w *Worker) task.Task {
	tb.Helper()
	run := runTask(tb, w, newTask())
	if err := rt.Exit(run.ContainerID, 0, false); err != nil {
		tb.Fatal(err)
	}
	return waitState(tb, w, run.ID, task.Completed)
}

// containerExists reports whether the fake runtime still has the container.
func containerExists(rt *workertest.Runtime, id string) bool {
	return slices.ContainsFunc(rt.Containers(), func(c task.Container) bool { return c.ID == id })
}

// A removed task is not found from the moment Remove returns; its container is stopped and
// removed, and only then is its record forgotten, with a Removed change as its last.
func TestRemoveRunningTask(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store})
	_, changes, cancel := w.Changes(0)
	defer cancel()
	run := runTask(t, w, newTask())
	if err := w.Remove(run.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := w.Get(run.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Get right after Remove: got %v, want ENOTFOUND", err)
	}
	if slices.ContainsFunc(w.List(), func(x task.Task) bool { return x.ID == run.ID }) {
		t.Error("List right after Remove: the task is listed")
	}
	if err := w.Stop(run.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Stop of a task being removed: got %v, want ENOTFOUND", err)
	}
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(run.ID); return !ok }, "the task's record forgotten")
	if containerExists(rt, run.ContainerID) {
		t.Errorf("container %s exists after the task was forgotten", run.ContainerID)
	}
	if err := w.Remove(run.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Remove again: got %v, want ENOTFOUND", err)
	}
	deadline := time.After(waitTimeout)
	for {
		select {
		case c := <-changes:
			if c.TaskID == run.ID && c.Type == task.RecordRemoved {
				if c.State != task.Completed || c.Message != "by request" {
					t.Errorf("Removed change: got state %v message %q, want Completed, by request", c.State, c.Message)
				}
				return
			}
		case <-deadline:
			t.Fatal("no Removed change")
		}
	}
}

// While the runtime does not answer, a removal waits with the task's record kept as a
// tombstone (hidden from the API), and completes once the runtime answers again.
func TestRemoveWaitsForTheRuntime(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store, PingInterval: 10 * time.Millisecond})
	ended := endTask(t, rt, w)
	down := task.Errorf(task.EUNAVAILABLE, "docker does not answer")
	rt.SetErrs(down, down)
	rt.SetPingErr(down)
	if err := w.Remove(ended.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	waitFor(t, waitTimeout, func() bool { return w.Ready(t.Context()) != nil }, "the worker to see the runtime down")
	if _, ok := store.Get(ended.ID); !ok {
		t.Fatal("the task's record was forgotten while its container could not be removed")
	}
	if !slices.ContainsFunc(store.Orders(), func(o task.Order) bool { return o.TaskID == ended.ID && o.Kind == task.OrderRemove }) {
		t.Errorf("orders %+v: want the removal stored", store.Orders())
	}
	if _, err := w.Get(ended.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Get while the removal waits: got %v, want ENOTFOUND", err)
	}
	rt.SetErrs(nil, nil)
	rt.SetPingErr(nil)
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(ended.ID); return !ok }, "the task forgotten once the runtime answers")
	if containerExists(rt, ended.ContainerID) {
		t.Errorf("container %s exists after the task was forgotten", ended.ContainerID)
	}
	// The order is done just after the task is forgotten.
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the removal's order to be done")
}

// storedEnded returns a Completed task that ended at the given time, with a container.
func storedEnded(finished time.Time) task.Task {
	t := newTask()
	t.State = task.Completed
	t.ContainerID = "c-" + t.ID.String()
	t.FinishTime = finished
	return t
}

// removingIDs returns the tasks whose removal collect queued.
func removingIDs(w *Worker) []uuid.UUID {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []uuid.UUID
	for id, r := range w.runners {
		if r.removing != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// Beyond KeepEnded, the longest-ended tasks go first, whatever order they were submitted in;
// beyond KeepEndedFor every one goes; a task with an order stored (work pending) and one that
// has not ended never go.
func TestCollect(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	oldest, middle, newest := storedEnded(now.Add(-3*time.Hour)), storedEnded(now.Add(-2*time.Hour)), storedEnded(now.Add(-time.Hour))
	busy := storedEnded(now.Add(-5 * time.Hour))
	busy.State = task.Failed
	running := newTask()
	running.State = task.Running

	tests := []struct {
		name      string
		retention Retention
		want      []uuid.UUID
	}{
		{"keep 2", Retention{KeepEnded: 2, KeepEndedFor: 24 * time.Hour}, []uuid.UUID{oldest.ID, middle.ID}},
		{"keep 3", Retention{KeepEnded: 3, KeepEndedFor: 24 * time.Hour}, []uuid.UUID{oldest.ID}},
		{"keep 10", Retention{KeepEnded: 10, KeepEndedFor: 24 * time.Hour}, nil},
		{"keep for 90m", Retention{KeepEnded: 10, KeepEndedFor: 90 * time.Minute}, []uuid.UUID{oldest.ID, middle.ID}},
		{"keep 1 for 150m", Retention{KeepEnded: 1, KeepEndedFor: 150 * time.Minute}, []uuid.UUID{oldest.ID, middle.ID, newest.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &MemoryStore{}
			for _, x := range []task.Task{newest, running, oldest, busy, middle} {
				store.Put(x)
			}
			// A restart of the Failed task, accepted and not yet applied.
			restart := busy
			restart.State = task.Scheduled
			store.Accept(nil, task.Order{Kind: task.OrderStart, TaskID: busy.ID, Event: &task.Event{ID: uuid.New(), Task: restart}})
			w := New(workertest.New(), Config{Store: store, Retention: tt.retention, Now: func() time.Time { return now }, Logger: testLogger(t)})
			w.collect()
			got := removingIDs(w)
			slices.SortFunc(got, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
			want := slices.Clone(tt.want)
			slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
			if !slices.Equal(got, want) {
				t.Errorf("removing %v, want %v (oldest %v, middle %v, newest %v)", got, want, oldest.ID, middle.ID, newest.ID)
			}
			for _, id := range got {
				if !slices.ContainsFunc(store.Orders(), func(o task.Order) bool { return o.TaskID == id && o.Kind == task.OrderRemove }) {
					t.Errorf("task %s: its removal is not stored", id)
				}
			}
		})
	}
}

// Retention runs on its own: ended tasks beyond KeepEnded are removed with their containers,
// the longest-ended first.
func TestRetentionRemovesEndedTasks(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Retention: Retention{KeepEnded: 2, Interval: 5 * time.Millisecond}})
	var ended []task.Task
	for range 5 {
		ended = append(ended, endTask(t, rt, w))
	}
	waitFor(t, waitTimeout, func() bool { return len(w.List()) == 2 }, "two tasks left")
	for i, e := range ended {
		_, err := w.Get(e.ID)
		if kept := i >= 3; kept != (err == nil) {
			t.Errorf("task %d of 5: Get says %v, want kept %v", i+1, err, kept)
		}
		if kept := i >= 3; !kept {
			waitFor(t, waitTimeout, func() bool { return !containerExists(rt, e.ContainerID) }, "the container of a removed task gone")
		}
	}
	run := runTask(t, w, newTask())
	// Retention never touches a task that has not ended.
	waitFor(t, waitTimeout, func() bool { w.collect(); return len(w.List()) == 3 }, "the running task kept")
	if _, err := w.Get(run.ID); err != nil {
		t.Errorf("the running task: %v", err)
	}
}

// At the task cap, ended tasks make room, each removed with its containers; a submission is
// never refused while an ended task can go.
func TestMaxTasksRemovesEndedTasksWithContainers(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{MaxTasks: 3})
	var all []task.Task
	for i := range 20 {
		e := endTask(t, rt, w)
		all = append(all, e)
		if n := len(w.List()); n > 3 {
			t.Fatalf("after %d tasks: %d listed, want at most 3", i+1, n)
		}
	}
	for _, e := range all[:len(all)-3] {
		waitFor(t, waitTimeout, func() bool { return !containerExists(rt, e.ContainerID) }, "the container of a task removed for room gone")
	}
	// With every task running, there is no room, and the answer says why.
	w2rt := workertest.New()
	w2 := startWorker(t, w2rt, Config{MaxTasks: 2})
	runTask(t, w2, newTask())
	runTask(t, w2, newTask())
	if _, err := w2.Submit(eventFor(newTask())); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "its maximum") {
		t.Errorf("a third task with two running: got %v, want ECONFLICT at its maximum", err)
	}
}

// A removal whose container the runtime refuses to remove (not an outage) gives the task back,
// with its container, rather than forget a task whose container still exists; a later removal,
// once the runtime lets it, completes.
func TestRemoveRefusedKeepsTheTask(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store})
	ended := endTask(t, rt, w)
	rt.SetErrs(nil, task.Errorf(task.ECONFLICT, "removal of container %s is already in progress", ended.ContainerID))
	if err := w.Remove(ended.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	waitFor(t, waitTimeout, func() bool {
		got, err := w.Get(ended.ID)
		return err == nil && got.ContainerID == ended.ContainerID
	}, "the task shown again, with its container")
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the failed removal's order done with")
	rt.SetErrs(nil, nil)
	if err := w.Remove(ended.ID); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(ended.ID); return !ok }, "the task forgotten")
	if containerExists(rt, ended.ContainerID) {
		t.Errorf("container %s exists after the task was forgotten", ended.ContainerID)
	}
}

// deleteFailStore is a MemoryStore whose Delete fails while fail is set.
type deleteFailStore struct {
	*MemoryStore
	fail atomic.Bool
}

func (s *deleteFailStore) Delete(id uuid.UUID) error {
	if s.fail.Load() {
		return errors.New("disk full")
	}
	return s.MemoryStore.Delete(id)
}

// A removal whose record cannot be forgotten (the store's delete fails after the containers
// are gone) shows the task again, without its container, rather than hiding it until the
// worker restarts; a second removal forgets it.
func TestRemoveWhoseForgetFailsShowsTheTaskAgain(t *testing.T) {
	rt := workertest.New()
	store := &deleteFailStore{MemoryStore: &MemoryStore{}}
	w := startWorker(t, rt, Config{Store: store})
	ended := endTask(t, rt, w)
	store.fail.Store(true)
	if err := w.Remove(ended.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	waitFor(t, waitTimeout, func() bool { return !containerExists(rt, ended.ContainerID) }, "the task's container removed")
	waitFor(t, waitTimeout, func() bool {
		got, err := w.Get(ended.ID)
		return err == nil && got.State == task.Completed
	}, "the task shown again")
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the failed removal's order done with")
	store.fail.Store(false)
	if err := w.Remove(ended.ID); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(ended.ID); return !ok }, "the task forgotten")
}

// A removal whose task was forgotten before its order was done (a crash between the two) is
// replayed on a task the worker does not know: it leaves nothing behind, and a later task with
// that ID is shown and started.
func TestRemoveReplayedAfterItsTaskWasForgotten(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	gone := newTask()
	if _, err := store.Accept(nil, task.Order{Kind: task.OrderRemove, TaskID: gone.ID}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, rt, Config{Store: store})
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the replayed removal to be done")
	submit(t, w, eventFor(gone))
	got := waitState(t, w, gone.ID, task.Running)
	if got.ID != gone.ID {
		t.Errorf("Get: got %v, want the new task", got.ID)
	}
}

// A task being removed is gone for clients at once, its name too: a new task may take it while
// the removal waits for the runtime.
func TestRemovedTasksNameIsFree(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{PingInterval: 10 * time.Millisecond})
	spec := newTask()
	spec.Name = "web"
	runTask(t, w, spec)
	down := task.Errorf(task.EUNAVAILABLE, "docker does not answer")
	rt.SetErrs(down, down)
	rt.SetPingErr(down)
	if err := w.Remove(spec.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := w.Get(spec.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Fatalf("Get of the task being removed: got %v, want ENOTFOUND", err)
	}
	next := newTask()
	next.Name = "web"
	if _, err := w.Submit(eventFor(next)); err != nil {
		t.Errorf("a new task with the name of one being removed: got %v, want it accepted", err)
	}
	rt.SetErrs(nil, nil)
	rt.SetPingErr(nil)
	waitState(t, w, next.ID, task.Running)
}

// At the task cap, an ended task with no container of its own may still have a stray one (a
// superseded start's, within its orphan grace): it is removed before the task is forgotten, as
// every removal does, so that it never becomes a container of a task the worker has no record
// of, which the next start would take up.
func TestMaxTasksRemovesStrayContainersOfForgottenTasks(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store, MaxTasks: 2})
	a := runTask(t, w, newTask())
	if err := w.Stop(a.ID); err != nil {
		t.Fatal(err)
	}
	stopped := waitState(t, w, a.ID, task.Completed)
	if stopped.ContainerID != "" {
		t.Fatalf("stopped task: got ContainerID %q, want none", stopped.ContainerID)
	}
	spec := a
	spec.RestartCount = 0
	stray := rt.Add(task.Container{TaskID: a.ID, EventID: uuid.NewString(), Spec: &spec})
	runTask(t, w, newTask())
	submit(t, w, eventFor(newTask())) // the third: a is forgotten to make room
	waitFor(t, waitTimeout, func() bool { _, ok := store.Get(a.ID); return !ok }, "the ended task forgotten")
	if containerExists(rt, stray.ID) {
		t.Errorf("stray container %s of task %s exists after the task was forgotten", stray.ID, a.ID)
	}
}
