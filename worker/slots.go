package worker

import (
	"container/list"
	"context"
	"errors"
)

// startSlots bounds the container starts under way at once (Config.Concurrency). A start that
// finds no slot free waits for one without a goroutine: its runner goes on the queue of
// waiters, its launch goes back to the front of its backlog, and its goroutine returns, as a
// parked runner's does. A slot given back goes straight to the first waiter, which then holds it,
// and is woken; its launch runs again from the top. So a worker with thousands of starts queued
// runs no goroutine for them, and they start in the order they asked, as the channel semaphore
// this replaced had them. Guarded by Worker.mu.
type startSlots struct {
	free    int       // slots no start holds; 0 while a start waits (but when the worker shuts down)
	waiting list.List // of *runner: the runners whose launch waits for a slot, first come first
}

// errWaitingForSlot says a launch waits for a start slot: it was put back at the front of its
// runner's backlog, which waits on the queue of startSlots, its order still stored.
var errWaitingForSlot = errors.New("waiting for a start slot")

// slotAnswer is what takeSlot answers a launch.
type slotAnswer int

const (
	slotTaken    slotAnswer = iota // the launch holds a slot and goes on
	slotWait                       // the launch waits for a slot (errWaitingForSlot)
	slotStopping                   // a stop of the task is accepted: the launch starts nothing
)

// takeSlot gives the launch of seq a start slot: the one handed to the runner while it waited,
// or a free one if no other start waits for one. A runner whose task is being stopped takes
// none (and gives back one it was handed), and neither does one of a worker shutting down, so
// that its task stays Scheduled with its order stored, to start when the worker runs again.
// Otherwise the launch waits its turn: it goes back to the front of the backlog, which waits
// on the queue of waiters until a slot is handed to it (giveSlot).
func (r *runner) takeSlot(ctx context.Context, seq uint64) slotAnswer {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.stopping {
		if r.slot {
			w.giveSlotLocked(ctx, r)
		}
		return slotStopping
	}
	if r.slot {
		return slotTaken
	}
	if w.slots.free > 0 && ctx.Err() == nil {
		w.slots.free--
		r.slot = true
		return slotTaken
	}
	r.backlog = append([]op{{kind: opLaunch, taskID: r.id, seq: seq}}, r.backlog...)
	w.queued++
	r.slotWait = w.slots.waiting.PushBack(r)
	return slotWait
}

// giveSlot gives back the start slot the runner holds, if it holds one (one may have been
// handed to it while it waited, which a launch that ends early must give back too).
func (r *runner) giveSlot(ctx context.Context) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.slot {
		w.giveSlotLocked(ctx, r)
	}
}

// giveSlotLocked takes the slot r holds and hands it to the first runner waiting for one, which
// it wakes on ctx (Run's), or frees it. Callers hold w.mu.
func (w *Worker) giveSlotLocked(ctx context.Context, r *runner) {
	r.slot = false
	e := w.slots.waiting.Front()
	if e == nil {
		w.slots.free++
		return
	}
	next := w.slots.waiting.Remove(e).(*runner)
	next.slotWait = nil
	next.slot = true
	w.wakeLocked(ctx, next)
}

// leaveSlotQueueLocked takes r off the queue of runners waiting for a start slot, if it is on
// it: a stop or a removal of its task is accepted, and ends the task without a start, so that it
// need not wait its turn. Its launch, applied again when its runner is woken, finds the stop and
// starts nothing. Callers hold w.mu.
func (w *Worker) leaveSlotQueueLocked(r *runner) {
	if r.slotWait != nil {
		w.slots.waiting.Remove(r.slotWait)
		r.slotWait = nil
	}
}

// isWaitingForSlot reports whether err is a launch's errWaitingForSlot.
func isWaitingForSlot(err error) bool { return errors.Is(err, errWaitingForSlot) }
