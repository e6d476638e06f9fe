package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// gcState is what the worker holds for removing tasks. Guarded by Worker.mu.
type gcState struct {
	retention Retention
	// removing holds the tasks with a removal accepted and not yet applied: the API no longer
	// shows them, and their records stay, as tombstones, until their containers are gone.
	removing map[uuid.UUID]string // why each is removed, for the log
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
	w.pending.Enqueue(op{kind: opRemove, taskID: id, seq: order.Seq})
	w.signal()
	w.log.Info("task removal accepted", "task", id, "why", why)
	return nil
}

// markRemovingLocked notes that task id is being removed. Callers hold w.mu, or own the worker
// before Run.
func (w *Worker) markRemovingLocked(id uuid.UUID, why string) {
	if w.gc.removing == nil {
		w.gc.removing = make(map[uuid.UUID]string)
	}
	w.gc.removing[id] = why
	w.stopping[id] = true
}

// isRemovingLocked reports whether a removal of task id is accepted. Callers hold w.mu.
func (w *Worker) isRemovingLocked(id uuid.UUID) bool {
	_, ok := w.gc.removing[id]
	return ok
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
	if len(w.gc.removing) == 0 {
		return nil
	}
	out := make(map[uuid.UUID]bool, len(w.gc.removing))
	for id := range w.gc.removing {
		out[id] = true
	}
	return out
}

// remove carries out a removal: the task is stopped and its container removed, and only once
// the container is gone is the task forgotten, so that a worker that restarts never finds a
// container of a task it has no record of. When the runtime does not answer, the removal waits
// (its order stored) and is carried out when it answers.
func (w *Worker) remove(opCtx context.Context, log *slog.Logger, l *live, o op) error {
	err := w.stop(opCtx, log, l, o.taskID, o.seq)
	var parked *parkedError
	if errors.As(err, &parked) {
		parked.op = o // stop keeps the task stopping until it is done
		return parked
	}
	w.mu.Lock()
	why := w.gc.removing[o.taskID]
	w.mu.Unlock()
	if err != nil {
		// The container could not be removed: the task stays, and shows again, with its
		// container, so that nothing is lost track of; retention tries again later.
		w.mu.Lock()
		delete(w.gc.removing, o.taskID)
		w.mu.Unlock()
		return fmt.Errorf("remove task: %w", err)
	}
	// Every container of the task goes before its record, not only the one the record names: a
	// stray one (a start superseded, a second container of a task that ended) would otherwise
	// be a container of a task the worker has no record of, which it takes up and never removes.
	if err := w.removeAllContainers(opCtx, log, o.taskID); err != nil {
		if unavailable(err) {
			return &parkedError{op: o, err: err}
		}
		w.mu.Lock()
		delete(w.gc.removing, o.taskID)
		w.mu.Unlock()
		return fmt.Errorf("remove task: %w", err)
	}
	t, _ := w.store.Get(o.taskID)
	mu := w.writeLock(o.taskID)
	mu.Lock()
	err = w.store.Delete(o.taskID)
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("forget task %s: %w", o.taskID, err)
	}
	w.mu.Lock()
	delete(w.gc.removing, o.taskID)
	delete(w.live, o.taskID)
	w.mu.Unlock()
	w.changes.publish([]task.Change{{Time: w.now(), TaskID: t.ID, Name: t.Name, Type: task.RecordRemoved,
		Message: why, State: t.State}})
	log.Info("task removed", "why", why)
	return nil
}

// collectable returns the ended tasks that may be removed now, longest-ended first: none with
// work pending (an order stored, an operation queued or waiting for the runtime, a restart
// timer) and none already being removed. Callers hold w.mu.
func (w *Worker) collectable() (idle []task.Task, ended int) {
	busy := make(map[uuid.UUID]bool)
	for _, o := range w.store.Orders() {
		busy[o.TaskID] = true
	}
	for id := range w.parkedTasks {
		busy[id] = true
	}
	for _, t := range w.store.List() {
		if !t.State.Ended() || w.isRemovingLocked(t.ID) {
			continue
		}
		ended++
		if l := w.live[t.ID]; busy[t.ID] || w.lanes[t.ID] != nil || w.stopping[t.ID] || (l != nil && l.timer != nil) {
			continue
		}
		idle = append(idle, t)
	}
	slices.SortStableFunc(idle, func(a, b task.Task) int { return a.FinishTime.Compare(b.FinishTime) })
	return idle, ended
}

// collect removes the ended tasks retention does not keep: beyond KeepEnded, the longest-ended
// first, and every one that ended more than KeepEndedFor ago. It queues no more than the queue
// has room for; the next pass does the rest.
func (w *Worker) collect() {
	r := w.gc.retention
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.downErr != nil {
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
	tick := time.NewTicker(w.gc.retention.Interval)
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
	n := w.store.Len() - len(w.gc.removing)
	if n < w.maxTasks {
		return nil
	}
	target := w.maxTasks - max(1, w.maxTasks/10)
	idle, _ := w.collectable()
	removing := 0
	for _, t := range idle {
		if n <= target || w.roomInQueue() != nil {
			break
		}
		if err := w.removeLocked(t.ID, fmt.Sprintf("the worker tracks %d tasks, its maximum", w.maxTasks)); err != nil {
			return err
		}
		removing++
		n--
	}
	if n >= w.maxTasks {
		return task.Errorf(task.ECONFLICT, "the worker tracks %d tasks, its maximum, and none has ended without work pending; delete some first", n)
	}
	w.log.Info("removing ended tasks to make room", "removing", removing)
	return nil
}

// removeAllContainers removes every container of task id that the runtime lists.
func (w *Worker) removeAllContainers(ctx context.Context, log *slog.Logger, id uuid.UUID) error {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	list, err := w.rt.List(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range list {
		if c.TaskID != id {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, w.stopTimeout)
		err := w.rt.Remove(rctx, c.ID)
		cancel()
		if err != nil {
			return fmt.Errorf("remove container %s: %w", shortID(c.ID), err)
		}
		log.Debug("container of a removed task removed", "container", shortID(c.ID))
	}
	return nil
}
