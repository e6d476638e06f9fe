package worker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

var errDown = task.Errorf(task.EUNAVAILABLE, "Cannot connect to the Docker daemon")

// A worker that has no record of a task rebuilds it from its container, even when a
// new task is submitted before it has recovered.
func TestRebuildFromLabelsDespiteEarlySubmit(t *testing.T) {
	rt := workertest.New()
	first := startWorker(t, rt, Config{})
	spec := newTask()
	spec.RestartCount = 3
	run := runTask(t, first, spec)

	w := New(rt, Config{Logger: testLogger(t)})
	early := newTask()
	submit(t, w, eventFor(early)) // before Run: the rebuild must still happen
	workertest.Run(t, w)

	got := waitTask(t, w, spec, "rebuilt and running", func(t task.Task) bool { return t.State == task.Running })
	if got.ContainerID != run.ContainerID || got.RestartCount != 3 || got.Image != spec.Image {
		t.Errorf("rebuilt task: container %s RestartCount %d image %s, want %s 3 %s", got.ContainerID, got.RestartCount, got.Image, run.ContainerID, spec.Image)
	}
	waitState(t, w, early.ID, task.Running)
	if n := len(rt.Starts()); n != 2 {
		t.Errorf("starts: got %d, want 2 (the first task's, then the early one's; the rebuilt one is not restarted)", n)
	}
}

// Operations of a task that wait for the runtime keep their order: a newer restart event is not
// overtaken by an older one that was parked.
func TestParkedOperationsKeepTheirOrder(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{PingInterval: 20 * time.Millisecond})
	spec := newTask()
	runTask(t, w, spec)

	rt.SetErrs(errDown, errDown)
	older := spec
	older.Env = []string{"V=old"}
	submit(t, w, eventFor(older))
	waitFor(t, waitTimeout, func() bool { return w.unconfirmed() != "" }, "the worker to notice the runtime is down")
	newer := spec
	newer.Env = []string{"V=new"}
	submit(t, w, eventFor(newer))
	rt.SetErrs(nil, nil)

	got := waitTask(t, w, spec, "running the newer spec", func(t task.Task) bool {
		return t.State == task.Running && slices.Equal(t.Env, []string{"V=new"}) && w.QueueLen() == 0
	})
	starts := rt.Starts()
	if last := starts[len(starts)-1]; !slices.Equal(last.Env, []string{"V=new"}) {
		t.Errorf("last start: Env %v, want [V=new]", last.Env)
	}
	if got.Unconfirmed != "" {
		t.Errorf("Unconfirmed after the runtime came back: %q", got.Unconfirmed)
	}
}

// A restart goes ahead when the old container cannot be removed for a reason other than the
// runtime being away; the old container is left to the orphan reaper.
func TestRestartDespiteRemoveFailure(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter, OrphanGrace: time.Hour})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
	run := runTask(t, w, spec)
	rt.SetErrs(nil, task.Errorf(task.EINTERNAL, "unable to remove filesystem: device or resource busy"))
	rt.Exit(run.ContainerID, 1, false)
	got := waitTask(t, w, spec, "restarted", func(t task.Task) bool { return t.State == task.Running && t.RestartCount == 1 })
	if got.ContainerID == run.ContainerID {
		t.Error("the restart kept the old container")
	}
}

// A stop accepted while a restart is pending wins: the task does not start again.
func TestStopBeatsPendingRestart(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(5 * time.Millisecond)}
	run := runTask(t, w, spec)
	rt.SetErrs(errDown, errDown) // the stop waits for the runtime …
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	rt.SetErrs(nil, nil)
	rt.Exit(run.ContainerID, 1, false) // … while the container ends and its restart comes due
	// Whichever comes first, the exit or the stop, the stop decides: the task ends Completed.
	got := waitTask(t, w, spec, "ended", func(t task.Task) bool { return t.State.Ended() })
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("starts: got %d, want 1 (no restart after the stop)", n)
	}
	if got.State != task.Completed || countRecords(got, task.RecordStopped) != 1 {
		t.Errorf("got state %v records %v, want Completed with one Stopped record", got.State, recordTypes(got))
	}
}

// A worker restarting onto many running containers while the runtime does not answer their
// inspections parks every adoption, noting one outage (its cause is not wrapped again by each
// adoption that parks on it), and takes every container up, none restarted, once it answers.
func TestAdoptionsParkOnOneOutage(t *testing.T) {
	const n = 3 * adoptInspections
	rt := workertest.New()
	store, ids := runningInStore(t, rt, n)
	started := len(rt.Starts())
	rt.SetInspectErr(errDown)
	rt.SetPingErr(errDown)
	w := New(rt, Config{Store: store, PingInterval: 10 * time.Millisecond, Logger: testLogger(t)})
	workertest.Run(t, w) // not Start: the worker is not ready while the runtime is down
	waitFor(t, waitTimeout, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.outage.waiting) == n
	}, "every adoption parked")
	if note := w.unconfirmed(); note == "" || len(note) > 512 {
		t.Errorf("the outage note with %d adoptions parked: %d bytes, want one outage's (%.300q)", n, len(note), note)
	}
	rt.SetInspectErr(nil)
	rt.SetPingErr(nil)
	waitFor(t, waitTimeout, func() bool { return takenUp(w, ids) && w.unconfirmed() == "" }, "every container taken up")
	if got := len(rt.Starts()); got != started {
		t.Errorf("starts after the restart: %d, want none (%d before)", got-started, started)
	}
}

// A worker restarting onto many running containers inspects at most adoptInspections of them at
// once to take them up, and takes every one up.
func TestAdoptionsInspectAFewAtOnce(t *testing.T) {
	const n = 4 * adoptInspections
	rt := workertest.New()
	store, ids := runningInStore(t, rt, n)
	var mu sync.Mutex
	cur, most, seen := 0, 0, 0
	release := make(chan struct{})
	rt.InspectHook = func(ctx context.Context, id string) error {
		mu.Lock()
		cur++
		seen++
		most = max(most, cur)
		mu.Unlock()
		defer func() {
			mu.Lock()
			cur--
			mu.Unlock()
		}()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	w := New(rt, Config{Store: store, Logger: testLogger(t)})
	workertest.Run(t, w)
	// The inspections are held: as many as may run at once get under way, and no more.
	waitFor(t, waitTimeout, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return cur == adoptInspections
	}, "exactly adoptInspections inspections under way (more at once: the bound does not hold)")
	close(release)
	waitFor(t, waitTimeout, func() bool { return takenUp(w, ids) }, "every container taken up")
	mu.Lock()
	defer mu.Unlock()
	if most != adoptInspections || seen < n {
		t.Errorf("inspections: %d at most at once, %d in all; want %d at once, %d or more in all", most, seen, adoptInspections, n)
	}
}

// runningInStore starts n containers on rt and stores their tasks as Running, as a worker that
// was killed left them, but without the host ports that taking them up reads from the runtime.
func runningInStore(t *testing.T, rt *workertest.Runtime, n int) (*MemoryStore, []uuid.UUID) {
	t.Helper()
	store := &MemoryStore{}
	var ids []uuid.UUID
	for range n {
		spec := newTask()
		c, err := rt.Start(context.Background(), spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		spec.State, spec.ContainerID, spec.StartTime = task.Running, c.ID, time.Now()
		if err := store.Put(spec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, spec.ID)
	}
	return store, ids
}

// takenUp reports whether every task is Running with the host ports its adoption read.
func takenUp(w *Worker, ids []uuid.UUID) bool {
	for _, id := range ids {
		if got, _ := w.Get(id); got.State != task.Running || len(got.HostPorts) == 0 {
			return false
		}
	}
	return true
}
