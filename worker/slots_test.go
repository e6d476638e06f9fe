package worker

import (
	"context"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// slotWaiters returns how many launches wait for a start slot.
func slotWaiters(w *Worker) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.slots.waiting.Len()
}

// holdOneStart submits a task to a gated worker with one start slot and waits until its start
// holds the slot, at the gate. It returns the task.
func holdOneStart(tb testing.TB, w *Worker, g *gate) task.Task {
	tb.Helper()
	busy := newTask()
	submit(tb, w, eventFor(busy))
	waitFor(tb, waitTimeout, func() bool { entered, _, _ := g.counts(); return entered == 1 }, "the first start to take the only slot")
	return busy
}

// Starts waiting for a start slot hold no goroutine: with thousands queued behind a start that
// is under way, the worker runs as many goroutines as with none.
func TestStartsWaitingForASlotHoldNoGoroutine(t *testing.T) {
	const n = 300
	const bound = 16 // goroutines that may come and go meanwhile: a runner finishing, the loop, timers
	_, w, g := gatedWorker(t, Config{Concurrency: 1})
	holdOneStart(t, w, g)
	before := runtime.NumGoroutine()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		spec := newTask()
		ids[i] = spec.ID
		submit(t, w, eventFor(spec))
	}
	waitFor(t, waitTimeout, func() bool { return slotWaiters(w) == n }, "every start to wait for the slot")
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > before+bound {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines with %d starts waiting for a slot: got %d, want at most %d (%d with none waiting, + %d)",
				n, runtime.NumGoroutine(), before+bound, before, bound)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := w.QueueLen(); got != n {
		t.Errorf("QueueLen: got %d, want %d (every start waiting for the slot)", got, n)
	}
	g.release()
	for _, id := range ids {
		waitState(t, w, id, task.Running)
	}
	if _, _, maxAtOnce := g.counts(); maxAtOnce != 1 {
		t.Errorf("most starts at once: got %d, want 1", maxAtOnce)
	}
	if got := w.QueueLen(); got != 0 {
		t.Errorf("QueueLen once all run: got %d, want 0", got)
	}
}

// Starts that wait for a start slot get it in the order they asked for it.
func TestStartsWaitingForASlotKeepTheirOrder(t *testing.T) {
	const n = 20
	rt, w, g := gatedWorker(t, Config{Concurrency: 1})
	busy := holdOneStart(t, w, g)
	want := []uuid.UUID{busy.ID}
	for i := range n {
		spec := newTask()
		want = append(want, spec.ID)
		submit(t, w, eventFor(spec))
		waitFor(t, waitTimeout, func() bool { return slotWaiters(w) == i+1 }, "the start to wait for the slot")
	}
	g.release()
	for _, id := range want {
		waitState(t, w, id, task.Running)
	}
	var got []uuid.UUID
	for _, s := range rt.Starts() {
		got = append(got, s.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("starts: got %v, want them in the order submitted, %v", got, want)
	}
}

// A stop accepted while the start waits for a slot ends the task at once, without a container:
// it does not wait for the starts ahead of it. The slot it never took goes to the next start.
func TestStopOfAStartWaitingForASlot(t *testing.T) {
	rt, w, g := gatedWorker(t, Config{Concurrency: 1})
	busy := holdOneStart(t, w, g)
	stopped, next := newTask(), newTask()
	submit(t, w, eventFor(stopped))
	waitFor(t, waitTimeout, func() bool { return slotWaiters(w) == 1 }, "the start to wait for the slot")
	submit(t, w, eventFor(next))
	waitFor(t, waitTimeout, func() bool { return slotWaiters(w) == 2 }, "the next start to wait for the slot")
	if err := w.Stop(stopped.ID); err != nil {
		t.Fatal(err)
	}
	// The first start still holds the only slot.
	got := waitState(t, w, stopped.ID, task.Completed)
	if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request before it started" {
		t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(got))
	}
	if got.ContainerID != "" {
		t.Errorf("ContainerID: got %q, want none", got.ContainerID)
	}
	waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 1 }, "only the next start to wait")
	if n := slotWaiters(w); n != 1 {
		t.Errorf("starts waiting for the slot: got %d, want 1", n)
	}
	g.release()
	waitState(t, w, busy.ID, task.Running)
	waitState(t, w, next.ID, task.Running)
	for _, st := range rt.Starts() {
		if st.ID == stopped.ID {
			t.Errorf("the stopped task was started")
		}
	}
	if _, _, maxAtOnce := g.counts(); maxAtOnce != 1 {
		t.Errorf("most starts at once: got %d, want 1", maxAtOnce)
	}
}

// Starts that wait for a slot while the runtime does not answer take their turn and park, and
// all run, one at a time, once it answers again.
func TestStartsWaitingForASlotThroughAnOutage(t *testing.T) {
	const n = 5
	rt := workertest.New()
	g := &gate{open: make(chan struct{})}
	var down atomic.Bool
	rt.StartHook = func(ctx context.Context, tk task.Task) error {
		if err := g.hook(ctx, tk); err != nil {
			return err
		}
		if down.Load() {
			return errDown
		}
		return nil
	}
	w := startWorker(t, rt, Config{Concurrency: 1, PingInterval: 10 * time.Millisecond})
	t.Cleanup(g.release)
	busy := holdOneStart(t, w, g)
	ids := []uuid.UUID{busy.ID}
	for range n {
		spec := newTask()
		ids = append(ids, spec.ID)
		submit(t, w, eventFor(spec))
	}
	waitFor(t, waitTimeout, func() bool { return slotWaiters(w) == n }, "every start to wait for the slot")
	down.Store(true)
	rt.SetPingErr(errDown)
	g.release()
	// The held start fails with the runtime away, and parks; so does each waiting one in turn.
	waitFor(t, waitTimeout, func() bool { return w.unconfirmed() != "" && slotWaiters(w) == 0 && w.QueueLen() == n+1 },
		"every start parked")
	down.Store(false)
	rt.SetPingErr(nil)
	for _, id := range ids {
		waitState(t, w, id, task.Running)
	}
	if _, _, maxAtOnce := g.counts(); maxAtOnce != 1 {
		t.Errorf("most starts at once: got %d, want 1", maxAtOnce)
	}
}
