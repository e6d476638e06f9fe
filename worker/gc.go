package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Retention says how much of its ended tasks a worker keeps, as Nomad's client garbage
// collection does: ended tasks beyond KeepEnded, or ended longer ago than KeepEndedFor, are
// removed with their containers, the longest-ended first. A task with work pending (a restart
// waiting, an order queued) is never removed. Zero fields take the defaults noted.
type Retention struct {
	KeepEnded    int           // ended tasks kept at most; default 100
	KeepEndedFor time.Duration // how long an ended task is kept; default 24h
	Interval     time.Duration // how often the worker looks for ended tasks to remove; default 1m
}

// withDefaults returns r with its zero fields set to the defaults.
func (r Retention) withDefaults() Retention {
	if r.KeepEnded <= 0 {
		r.KeepEnded = 100
	}
	if r.KeepEndedFor <= 0 {
		r.KeepEndedFor = 24 * time.Hour
	}
	if r.Interval <= 0 {
		r.Interval = time.Minute
	}
	return r
}

// Remove removes a task: it stops the task if it has not ended (as Stop does), removes its
// container, and forgets the task. It returns once the removal is stored and queued; from then
// on the task is not found. It fails with ENOTFOUND for an unknown task (or one being removed)
// and EUNAVAILABLE when the queue is full.
func (w *Worker) Remove(id uuid.UUID) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.store.Get(id); !ok || w.isRemovingLocked(id) {
		return task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	if err := w.roomInQueue(); err != nil {
		return err
	}
	return w.removeLocked(id, "by request")
}

// removeLocked stores and queues the removal of task id. Callers hold w.mu.
func (w *Worker) removeLocked(id uuid.UUID, why string) error {
	order, err := w.store.Accept(nil, task.Order{Kind: task.OrderRemove, TaskID: id})
	if err != nil {
		return fmt.Errorf("store the removal of task %s: %w", id, err)
	}
	w.markRemovingLocked(id, why)
	w.intake.push(op{kind: opRemove, taskID: id, seq: order.Seq})
	w.signal()
	w.log.Info("task removal accepted", "task", id, "why", why)
	return nil
}

// markRemovingLocked notes that task id is being removed, and so stopped. Callers hold w.mu,
// or own the worker before Run.
func (w *Worker) markRemovingLocked(id uuid.UUID, why string) {
	r := w.runnerLocked(id)
	if r.removing == "" {
		w.removals++
	}
	r.removing = why
	r.stopping = true
}

// clearRemovingLocked notes that r's removal is over, done or given up. Callers hold w.mu.
func (w *Worker) clearRemovingLocked(r *runner) {
	if r.removing != "" {
		w.removals--
		r.removing = ""
	}
}

// isRemovingLocked reports whether a removal of task id is accepted. Callers hold w.mu.
func (w *Worker) isRemovingLocked(id uuid.UUID) bool {
	r := w.runners[id]
	return r != nil && r.removing != ""
}

// isRemoving reports whether a removal of task id is accepted and not yet done.
func (w *Worker) isRemoving(id uuid.UUID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.isRemovingLocked(id)
}

// removingNow returns the tasks being removed, for Get and List to hide.
func (w *Worker) removingNow() map[uuid.UUID]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.removals == 0 {
		return nil
	}
	out := make(map[uuid.UUID]bool, w.removals)
	for id, r := range w.runners {
		if r.removing != "" {
			out[id] = true
		}
	}
	return out
}

// remove carries out a removal: the task is stopped and its container removed, and only once
// every container of it is gone is the task forgotten, so that a worker that restarts never
// finds a container of a task it has no record of. When the runtime does not answer, the
// removal waits (its order stored) and is carried out when it answers.
func (r *runner) remove(ctx context.Context, o op) error {
	w := r.w
	err := r.stop(ctx, o.seq)
	var parked *parkedError
	if errors.As(err, &parked) {
		parked.op = o // stop keeps the task stopping until it is done
		return parked
	}
	w.mu.Lock()
	why := r.removing
	w.mu.Unlock()
	if err != nil {
		// The container could not be removed: the task stays, and shows again, with its
		// container, so that nothing is lost track of; retention tries again later.
		w.mu.Lock()
		w.clearRemovingLocked(r)
		w.mu.Unlock()
		return fmt.Errorf("remove task: %w", err)
	}
	// Every container of the task goes before its record, not only the one the record names: a
	// stray one (a start superseded, a second container of a task that ended) would otherwise
	// be a container of a task the worker has no record of, which it takes up and never removes.
	if err := r.removeAllContainers(ctx); err != nil {
		if unavailable(err) {
			return &parkedError{op: o, err: err}
		}
		w.mu.Lock()
		w.clearRemovingLocked(r)
		w.mu.Unlock()
		return fmt.Errorf("remove task: %w", err)
	}
	t, _ := w.store.Get(r.id)
	mu := w.writeLock(r.id)
	mu.Lock()
	err = w.store.Delete(r.id)
	mu.Unlock()
	if err != nil {
		// Its containers are gone but its record stays: the task shows again, without a
		// container, and a later removal (the client's, or retention's) forgets it.
		w.mu.Lock()
		w.clearRemovingLocked(r)
		w.mu.Unlock()
		return fmt.Errorf("forget task %s: %w", r.id, err)
	}
	w.mu.Lock()
	w.clearRemovingLocked(r)
	r.gone = true
	w.mu.Unlock()
	w.changes.publish([]task.Change{{Time: w.now(), TaskID: t.ID, Name: t.Name, Type: task.RecordRemoved,
		Message: why, State: t.State}})
	r.log.Info("task removed", "why", why)
	return nil
}

// collectable returns the ended tasks that may be removed now, longest-ended first: none with
// work pending (an order stored, an operation queued or waiting for the runtime, a restart
// timer) and none already being removed. Callers hold w.mu.
func (w *Worker) collectable() (idle []*task.Task, ended int) {
	busy := make(map[uuid.UUID]bool)
	for _, o := range w.store.Orders() {
		busy[o.TaskID] = true
	}
	// Pointers to the stored tasks, which are immutable (read only): a copy of each would cost
	// the size of a Task per tracked task on every pass.
	for _, t := range w.store.Refs(nil) {
		if !t.State.Ended() || w.isRemovingLocked(t.ID) {
			continue
		}
		ended++
		if r := w.runners[t.ID]; busy[t.ID] || (r != nil && r.busyLocked()) {
			continue
		}
		idle = append(idle, t)
	}
	slices.SortStableFunc(idle, func(a, b *task.Task) int { return a.FinishTime.Compare(b.FinishTime) })
	return idle, ended
}

// collect removes the ended tasks retention does not keep: beyond KeepEnded, the longest-ended
// first, and every one that ended more than KeepEndedFor ago. It queues no more than the queue
// has room for; the next pass does the rest.
func (w *Worker) collect() {
	r := w.cfg.Retention
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.outage.err != nil {
		return // what cannot be removed now would only wait
	}
	idle, ended := w.collectable()
	excess := ended - r.KeepEnded
	for _, t := range idle {
		why := ""
		switch {
		case excess > 0:
			why = fmt.Sprintf("retention: more than %d ended tasks", r.KeepEnded)
		case now.Sub(t.FinishTime) > r.KeepEndedFor:
			why = fmt.Sprintf("retention: ended more than %s ago", r.KeepEndedFor)
		default:
			continue
		}
		if w.roomInQueue() != nil {
			return
		}
		if err := w.removeLocked(t.ID, why); err != nil {
			w.log.Error("retention: cannot remove an ended task", "task", t.ID, "err", err)
			return
		}
		excess--
	}
}

// gcLoop applies retention once the worker has recovered, and then every Interval, until ctx
// is done.
func (w *Worker) gcLoop(ctx context.Context) {
	defer w.wg.Done()
	tick := time.NewTicker(w.cfg.Retention.Interval)
	defer tick.Stop()
	for {
		w.collect()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// makeRoom makes room for one more task when the worker tracks maxTasks: ended tasks, the
// longest-ended first, are removed (a tenth of the maximum at once, so that a worker at its
// limit does not go through every task on every submission). Each is removed as Remove does,
// every container of it first (a task with no container of its own may have a stray one, a
// superseded start's), and no longer counts from then on. It fails with ECONFLICT only when no
// task has ended, or every ended one has work pending. Callers hold w.mu.
func (w *Worker) makeRoom() error {
	n := w.store.Len() - w.removals
	if n < w.cfg.MaxTasks {
		return nil
	}
	target := w.cfg.MaxTasks - max(1, w.cfg.MaxTasks/10)
	idle, _ := w.collectable()
	removing := 0
	for _, t := range idle {
		if n <= target || w.roomInQueue() != nil {
			break
		}
		if err := w.removeLocked(t.ID, fmt.Sprintf("the worker tracks %d tasks, its maximum", w.cfg.MaxTasks)); err != nil {
			return err
		}
		removing++
		n--
	}
	if n >= w.cfg.MaxTasks {
		return task.Errorf(task.ECONFLICT, "the worker tracks %d tasks, its maximum, and none has ended without work pending; delete some first", n)
	}
	w.log.Info("removing ended tasks to make room", "removing", removing)
	return nil
}

// removeAllContainers removes every container of the task that the runtime lists.
func (r *runner) removeAllContainers(ctx context.Context) error {
	w := r.w
	lctx, cancel := bounded(ctx, 30*time.Second)
	list, err := w.rt.List(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range list {
		if c.TaskID != r.id {
			continue
		}
		rctx, cancel := bounded(ctx, w.cfg.StopTimeout)
		err := w.rt.Remove(rctx, c.ID)
		cancel()
		if err != nil {
			return fmt.Errorf("remove container %s: %w", task.ShortID(c.ID), err)
		}
		r.log.Debug("container of a removed task removed", "container", task.ShortID(c.ID))
	}
	return nil
}

// busyLocked reports whether the runner has work pending: operations queued, under way or
// waiting for the runtime, a stop accepted, or a restart armed. Callers hold w.mu.
func (r *runner) busyLocked() bool {
	return r.active || r.parked || len(r.backlog) > 0 || r.stopping || r.restart != nil
}
