package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// pingTimeout is the least time a ping of the runtime has to answer.
const pingTimeout = 5 * time.Second

// park keeps o to carry out again when the runtime answers, and notes that it does not.
func (w *Worker) park(log *slog.Logger, o op, err error) {
	log.Warn("operation waits for the container runtime", "err", err)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.parked = append(w.parked, o)
	w.parkedTasks[o.taskID] = true
	// What the task's lane still holds waits too, behind o, so that its operations keep their
	// order.
	if l := w.lanes[o.taskID]; l != nil {
		w.parked = append(w.parked, l.ops...)
		l.ops = nil
	}
	if w.runCtx != nil && w.runCtx.Err() == nil {
		w.markDownLocked(err)
	}
}

// markDownLocked notes that the runtime does not answer, and why. Callers hold w.mu.
func (w *Worker) markDownLocked(err error) {
	if w.downErr == nil {
		w.downSince = w.now()
		w.log.Warn("the container runtime does not answer; tasks keep their last known state", "reason", err)
	}
	w.downErr = err
}

// RuntimeDown notes that the runtime does not answer, and why: what a caller that asked it on the
// worker's behalf learnt (the daemon, before Run, asking the Engine for its ID). Ready and the
// tasks' Unconfirmed notes say so until the worker sees the runtime answer.
func (w *Worker) RuntimeDown(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.markDownLocked(err)
}

// markUp notes that the runtime answers again. Coming back from an outage, the worker carries
// out what it parked, follows the runtime's events afresh and reconciles.
func (w *Worker) markUp() {
	w.mu.Lock()
	if w.downErr == nil {
		w.mu.Unlock()
		return
	}
	w.log.Info("the container runtime answers again", "down_for", w.now().Sub(w.downSince).Round(time.Millisecond))
	w.downErr = nil
	parked := w.parked
	w.parked = nil
	clear(w.parkedTasks)
	for _, o := range parked {
		w.route(o)
	}
	if w.watchCancel != nil {
		w.watchCancel() // a stream that hung may never say so: subscribe again
	}
	w.mu.Unlock()
	w.reconcile(w.runCtx)
}

// unconfirmed returns the note that Get and List put on tasks while the runtime does not answer.
func (w *Worker) unconfirmed() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.downErr == nil {
		return ""
	}
	return fmt.Sprintf("%s has not answered since %s (%s); this is the last known state",
		w.runtimeName, w.downSince.UTC().Format(time.RFC3339), w.downErr)
}

// pingLoop asks the runtime whether it answers every pingInterval, so that an outage, and the
// end of one, is noticed even when nothing else calls the runtime. A ping has pingTimeout to
// answer: an Engine that is only slow, on a loaded machine, is not taken for one that is gone.
func (w *Worker) pingLoop(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, max(w.pingInterval, pingTimeout))
		err := w.rt.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.mu.Lock()
			w.markDownLocked(err)
			w.mu.Unlock()
			continue
		}
		w.markUp()
	}
}

// recoverState brings the store and the runtime together when Run starts: running containers of
// known tasks are taken up as they are (never restarted), exits and disappearances that happened
// while the worker was away are recorded and their restart policies applied, tasks that were
// waiting to restart restart, and containers with no task behind them are marked as orphans. A
// worker whose store is not durable first rebuilds its tasks from the containers' labels. It
// waits for the runtime to answer, and returns early only when ctx is done.
func (w *Worker) recoverState(ctx context.Context) {
	var list []task.Container
	backoff := 100 * time.Millisecond
	for {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var err error
		list, err = w.rt.List(lctx)
		cancel()
		if err == nil {
			break
		}
		w.mu.Lock()
		w.markDownLocked(err)
		w.mu.Unlock()
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	w.markUp()
	if w.rebuild {
		w.rebuildFromLabels(ctx, list)
	}
	ordered := make(map[uuid.UUID]bool)
	for _, o := range w.store.Orders() {
		if o.Kind == task.OrderStart {
			ordered[o.TaskID] = true
		}
	}
	byID := make(map[string]task.Container, len(list))
	for _, c := range list {
		byID[c.ID] = c
	}
	adopted, checked, relaunched := 0, 0, 0
	w.mu.Lock()
	for _, t := range w.store.List() {
		c, exists := byID[t.ContainerID]
		switch {
		case t.State == task.Running && exists && c.Running:
			w.route(op{kind: opAdopt, taskID: t.ID, containerID: t.ContainerID})
			adopted++
		case t.State == task.Running:
			w.route(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: "start-up"})
			checked++
		case t.State == task.Scheduled && !ordered[t.ID] && !w.stopping[t.ID]:
			// It was waiting to restart, or restarting, when the worker stopped.
			w.route(op{kind: opRelaunch, taskID: t.ID})
			relaunched++
		case (t.State == task.Completed || t.State == task.Failed) && t.ContainerID != "" && !exists:
			w.route(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: string(task.ContainerDestroyed)})
		}
	}
	w.mu.Unlock()
	orphans := w.noteOrphans(list)
	w.log.Info("recovered state", "tasks", w.store.Len(), "containers", len(list), "adopted", adopted,
		"exited_or_gone", checked, "restarting", relaunched, "orders", len(w.store.Orders()), "orphans", orphans)
}

// rebuildFromLabels makes tasks again from the labels of the runtime's containers: the task's
// spec, its ID and the start that made the container. Of several containers of one task the
// newest running one (else the newest) is the task's; the rest are orphans.
func (w *Worker) rebuildFromLabels(ctx context.Context, list []task.Container) {
	newest := make(map[uuid.UUID]task.Container)
	for _, c := range list {
		if c.Spec == nil {
			continue
		}
		cur, ok := newest[c.TaskID]
		if !ok || (c.Running && !cur.Running) || (c.Running == cur.Running && c.Created.After(cur.Created)) {
			newest[c.TaskID] = c
		}
	}
	for id, c := range newest {
		if _, known := w.store.Get(id); known {
			continue // submitted again while the worker recovered: the submission wins
		}
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		info, err := w.rt.Inspect(ictx, c.ID)
		cancel()
		if err != nil {
			w.log.Warn("cannot rebuild task from its container", "task", id, "container", shortID(c.ID), "err", err)
			continue
		}
		t := c.Spec.Clone()
		t.ID = id
		t.State = task.Running
		t.ContainerID = c.ID
		t.HostPorts = info.HostPorts
		t.StartTime = info.StartedAt
		t.LastEvent = c.EventID
		t.AddRecord(w.now(), task.RecordReceived, "rebuilt from container %s after the worker restarted", shortID(c.ID))
		if err := w.store.Put(t); err != nil {
			w.log.Error("store rebuilt task", "task", id, "err", err)
			continue
		}
		w.names.update(task.Task{}, t)
		w.log.Info("rebuilt task from its container's labels", "task", id, "container", shortID(c.ID), "running", info.Running)
	}
}

// noteOrphans marks the containers that belong to no task: neither a task's current container
// nor one that a start under way or interrupted has made. It forgets orphans that are gone and
// returns how many there are.
func (w *Worker) noteOrphans(list []task.Container) int {
	mine := make(map[string]bool)
	starting := make(map[string]bool) // task ID + event ID of starts not yet recorded
	for _, t := range w.store.List() {
		if t.ContainerID != "" {
			mine[t.ContainerID] = true
		}
		if t.State == task.Scheduled || t.State == task.Pending {
			starting[t.ID.String()+t.LastEvent] = true
		}
	}
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	present := make(map[string]bool, len(list))
	for _, c := range list {
		present[c.ID] = true
		if mine[c.ID] || (c.Running && starting[c.TaskID.String()+c.EventID]) {
			delete(w.orphans, c.ID)
			continue
		}
		if _, ok := w.orphans[c.ID]; !ok {
			w.orphans[c.ID] = now
		}
	}
	for id := range w.orphans {
		if !present[id] {
			delete(w.orphans, id)
		}
	}
	return len(w.orphans)
}

// reapOrphans removes the orphans that have been orphans for the grace period, or, when the
// worker keeps orphans, reports each once.
func (w *Worker) reapOrphans(ctx context.Context) {
	now := w.now()
	var due []string
	w.mu.Lock()
	for id, since := range w.orphans {
		if now.Sub(since) >= w.orphanGrace {
			due = append(due, id)
		}
	}
	w.mu.Unlock()
	for _, id := range due {
		if w.keepOrphans {
			w.mu.Lock()
			reported := w.reported[id]
			w.reported[id] = true
			w.mu.Unlock()
			if !reported {
				w.log.Warn("orphan container: labelled by this worker, but no task is behind it; not removed (--reap-orphans=false)", "container", shortID(id))
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, w.stopTimeout)
		err := w.rt.Remove(rctx, id)
		cancel()
		if err != nil {
			w.log.Warn("cannot remove orphan container", "container", shortID(id), "err", err)
			continue
		}
		w.mu.Lock()
		delete(w.orphans, id)
		w.mu.Unlock()
		w.log.Warn("removed orphan container: labelled by this worker, but no task is behind it", "container", shortID(id))
	}
}
