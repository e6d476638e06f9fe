package worker

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// opKind names an operation after the runner method that carries it out.
type opKind int

const (
	opStart      opKind = iota // start: start or restart the task from event
	opStop                     // stop: the API's DELETE
	opCheck                    // check: find out what became of containerID and record it
	opRestartDue               // restartDue: a back-off ended; start the task again
	opHealth                   // health: a health check's result for containerID
	opLaunch                   // launch: start a container for a Scheduled task (a start that waited for the runtime)
	opAdopt                    // adopt: take up a running container found at start-up, no restart
	opRestartNow               // restartNow: start a Scheduled task again now, in a new container
	opPause                    // pauseChanged: containerID was paused (paused true) or unpaused outside cube
	opRemove                   // remove: stop the task, remove its containers, forget it
)

// op is one unit of work on one task.
type op struct {
	kind        opKind
	taskID      uuid.UUID
	event       *task.Event          // opStart; a pointer, so that an op is small (a Task is ~600 bytes) in a backlog
	containerID string               // opCheck, opHealth, opAdopt, opPause
	reason      string               // opCheck: what prompted it, for logs
	gen         int                  // opRestartDue: which back-off it ends
	health      string               // opHealth: the status
	result      *task.HealthResult   // opHealth: the check's result; nil for the runtime's own checks
	seq         uint64               // the stored order this op carries out, 0 for none
	died        *task.ContainerEvent // opCheck: the die event that prompted it, if one did
	paused      bool                 // opPause: paused, or unpaused
}

// runner owns one task: its operations waiting to be applied, the goroutine that applies them
// (its lane), its restart timer and its health probe. Its methods are the handlers of the
// operations. A runner exists while its task has work or state beyond its stored record; its
// goroutine exists only while it has operations to apply (see doc.go for why).
type runner struct {
	w   *Worker
	id  uuid.UUID
	log *slog.Logger

	// Guarded by w.mu.
	backlog  []op          // the task's operations not yet applied, in the order accepted
	active   bool          // a goroutine applies the backlog
	parked   bool          // the task waits for the runtime; its backlog waits with it
	stopping bool          // a stop or removal of the task is accepted and not yet applied
	removing string        // why a removal of the task is accepted and not yet done; "" for none
	restart  *time.Timer   // the pending restart, if any
	gen      int           // bumped whenever a pending restart is cancelled
	gone     bool          // the task was found unknown or forgotten: drop the runner when idle
	slotWait *list.Element // its launch waits for a start slot: its place on Worker.slots.waiting
	slot     bool          // it holds a start slot (its launch took one, or was handed one while it waited)

	// Owned by the goroutine that applies the backlog.
	stopProbe context.CancelFunc // stops the running health check, if any
	ip        string             // the container's address, for health checks
	oom       string             // the container the runtime reported an OOM kill of
	sawEnd    bool               // the task was ended as of the runner's last read or write of it
}

// runnerLocked returns the task's runner, making it when there is none. Callers hold w.mu, or
// own the worker before Run.
func (w *Worker) runnerLocked(id uuid.UUID) *runner {
	r, ok := w.runners[id]
	if !ok {
		r = &runner{w: w, id: id, log: w.log.With("task", id)}
		w.runners[id] = r
	}
	return r
}

// enqueue hands o to the loop, which routes it to its task's runner. It is how runtime events,
// reconciles, back-off timers and health checks reach a task. Operations enqueued when Run is
// not running are dropped.
func (w *Worker) enqueue(o op) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.running {
		return
	}
	w.intake.push(o)
	w.signal()
}

// signal wakes the loop. Callers hold w.mu.
func (w *Worker) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// dispatch routes every operation of the intake to its task's runner.
func (w *Worker) dispatch(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.intake.len() > 0 {
		w.route(ctx, w.intake.pop())
	}
}

// route appends o to its runner's backlog, and starts the runner's goroutine on ctx (Run's) if
// it has none. Callers hold w.mu. Operations routed when Run is not running are dropped.
func (w *Worker) route(ctx context.Context, o op) {
	if !w.running || ctx.Err() != nil {
		return
	}
	r := w.runnerLocked(o.taskID)
	r.backlog = append(r.backlog, o)
	w.queued++
	if o.kind == opStop || o.kind == opRemove {
		w.leaveSlotQueueLocked(r) // the stop ends the task without a start: it waits for no slot
	}
	w.wakeLocked(ctx, r)
}

// wakeLocked starts r's goroutine when r has operations to apply, does not wait for the
// runtime or for a start slot, and has no goroutine. Callers hold w.mu.
func (w *Worker) wakeLocked(ctx context.Context, r *runner) {
	if r.active || r.parked || r.slotWait != nil || len(r.backlog) == 0 || !w.running || ctx.Err() != nil {
		return
	}
	r.active = true
	w.wg.Add(1)
	go r.run(ctx)
}

// run applies the backlog in order until it runs dry, the task parks or waits for a start slot,
// or ctx is done.
func (r *runner) run(ctx context.Context) {
	w := r.w
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if r.parked || r.slotWait != nil || len(r.backlog) == 0 || ctx.Err() != nil {
			r.active = false
			w.retireLocked(r)
			w.mu.Unlock()
			return
		}
		o := r.backlog[0]
		r.backlog[0] = op{} // let go of its event
		r.backlog = r.backlog[1:]
		if len(r.backlog) == 0 {
			r.backlog = nil
		}
		w.queued--
		w.mu.Unlock()
		r.apply(ctx, o)
	}
}

// retireLocked forgets r when it holds nothing: no work, no timer, no stop or removal under way,
// no start slot, and either no task (it was removed, or the operations were for a task the worker
// does not know) or a task it saw end, with no health check or OOM report of it left. A runner of
// an ended task holds nothing its stored record does not say, and a worker tracking 10,000 ended
// tasks would otherwise keep 10,000 of them; the next operation of the task makes a new one. Only
// a runner that saw its task gone asks the store, so that the runners of tracked tasks cost
// nothing here. Callers hold w.mu, and are r's goroutine as it returns (which owns the probe
// fields read here).
func (w *Worker) retireLocked(r *runner) {
	if r.active || r.parked || len(r.backlog) > 0 || r.restart != nil || r.stopping || r.removing != "" ||
		r.slot || r.slotWait != nil {
		return
	}
	gone := r.gone
	if gone {
		r.gone = false
		_, known := w.store.Get(r.id)
		gone = !known // or submitted again meanwhile: kept only while that task has not ended
	}
	if !gone && (!r.sawEnd || r.stopProbe != nil || r.oom != "") {
		return
	}
	if w.runners[r.id] == r {
		delete(w.runners, r.id)
	}
}

// apply carries out one operation. Runtime calls run on a context that outlives ctx, bounded by
// their own timeouts (see bounded), so that shutting the worker down never leaves a half-made
// container. An operation that could not finish because the runtime did not answer is parked,
// its stored order kept, and carried out again when the runtime is back.
func (r *runner) apply(ctx context.Context, o op) {
	t, ok := r.w.store.Get(r.id)
	if !ok {
		// A container event can follow the removal of its task; a removal replayed after a
		// crash can find its task forgotten already (the order outlived the record). Nothing
		// of the task may stay marked as being removed or stopped: a later task with its ID
		// would be hidden, or never started.
		r.log.Debug("operation for a task the worker does not know dropped", "op", o.kind)
		r.w.mu.Lock()
		if o.kind == opRemove || o.kind == opStop {
			r.w.clearRemovingLocked(r)
			r.stopping = false
		}
		if r.slot { // handed to its launch while it waited: the next start's now
			r.w.giveSlotLocked(ctx, r)
		}
		r.gone = true
		r.w.mu.Unlock()
		r.done(o)
		return
	}
	// What the runner knows of its task's end comes from its writes, and from here for an
	// operation that writes nothing (a late event of a container no longer the task's, a stop of
	// a task that has ended): a runner made for an ended task is dropped once idle.
	r.sawEnd = t.State.Ended()
	var err error
	switch o.kind {
	case opStart:
		err = r.start(ctx, o)
	case opStop:
		err = r.stop(ctx, o.seq)
	case opCheck:
		err = r.check(ctx, o.containerID, o.reason, o.died)
	case opRestartDue:
		err = r.restartDue(ctx, o.gen)
	case opHealth:
		err = r.health(ctx, o)
	case opLaunch:
		err = r.launch(ctx, o.seq)
	case opAdopt:
		err = r.adopt(ctx, o.containerID)
	case opRestartNow:
		err = r.restartNow(ctx)
	case opPause:
		err = r.pauseChanged(ctx, o.containerID, o.paused)
	case opRemove:
		err = r.remove(ctx, o)
	}
	var parked *parkedError
	switch {
	case isWaitingForSlot(err):
		return // back in the backlog, its order kept, until a slot is handed to it
	case errors.As(err, &parked):
		r.park(ctx, parked.op, parked.err) // the outage is noted with the runtime's own error
		return
	case err != nil:
		r.log.Error("task operation failed", "err", err)
	}
	r.done(o)
}

// done forgets the stored order o carried out.
func (r *runner) done(o op) {
	if o.seq == 0 {
		return
	}
	if err := r.w.store.Done(o.seq); err != nil {
		r.log.Error("forget an applied order", "seq", o.seq, "err", err)
	}
}

// modify changes the task's stored record (see Worker.modify).
func (r *runner) modify(fn func(t *task.Task) error) (task.Task, error) {
	t, err := r.w.modify(r.id, fn)
	if err == nil {
		r.sawEnd = t.State.Ended()
	}
	return t, err
}

// note adds a record to the task, or logs why it could not: a record that cannot be stored
// must not stop what it records.
func (r *runner) note(typ, format string, args ...any) {
	if _, err := r.modify(func(t *task.Task) error {
		t.AddRecord(r.w.now(), typ, format, args...)
		return nil
	}); err != nil {
		r.log.Error("store a record of the task", "record", typ, "err", err)
	}
}

// isStopping reports whether a stop of the task is accepted and not yet applied.
func (r *runner) isStopping() bool {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return r.stopping
}

// armRestart starts the task again after d, as an opRestartDue, cancelling any pending restart.
func (r *runner) armRestart(d time.Duration) {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	r.cancelRestartLocked()
	gen, id := r.gen, r.id
	r.restart = time.AfterFunc(d, func() { w.enqueue(op{kind: opRestartDue, taskID: id, gen: gen}) })
}

// cancelRestart cancels the pending restart, if any.
func (r *runner) cancelRestart() {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	r.cancelRestartLocked()
}

// cancelRestartLocked is cancelRestart for callers that hold w.mu.
func (r *runner) cancelRestartLocked() {
	if r.restart != nil {
		r.restart.Stop()
		r.restart = nil
	}
	r.gen++
}

// backingOff reports whether a restart is pending.
func (r *runner) backingOff() bool {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return r.restart != nil
}

// cancelProbe stops the task's health check, if one runs.
func (r *runner) cancelProbe() {
	if r.stopProbe != nil {
		r.stopProbe()
		r.stopProbe = nil
	}
}

// bounded returns a context for a runtime call on behalf of an operation applied on ctx: it
// outlives ctx (a worker shutting down finishes what it started) and ends after d.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// parkedError says an operation could not finish because the runtime did not answer; op is
// what to carry out again once it does.
type parkedError struct {
	op  op
	err error
}

func (e *parkedError) Error() string { return "waiting for the container runtime: " + e.err.Error() }
func (e *parkedError) Unwrap() error { return e.err }

// unavailable reports whether err means the runtime did not answer.
func unavailable(err error) bool { return task.ErrorCode(err) == task.EUNAVAILABLE }
