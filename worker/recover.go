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
// waiting to restart restart, and the worker's containers of tasks it has no record of are taken
// up from their labels, whatever its store. It waits for the runtime to answer, and returns early
// only when ctx is done.
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
	rebuilt := w.rebuildFromLabels(ctx, list)
	byID := make(map[string]task.Container, len(list))
	for _, c := range list {
		byID[c.ID] = c
	}
	adopted, checked, relaunched := 0, 0, 0
	w.mu.Lock()
	// The orders and the tasks are read together under w.mu, which Submit holds while it
	// stores a task with its order: a task submitted while the worker recovers is either in
	// neither or has its order here too, so that its start is not taken for one that was
	// waiting to restart, and made twice.
	ordered := make(map[uuid.UUID]bool)
	for _, o := range w.store.Orders() {
		if o.Kind == task.OrderStart {
			ordered[o.TaskID] = true
		}
	}
	for _, t := range w.store.List() {
		c, exists := byID[t.ContainerID]
		switch {
		case t.State == task.Running && exists && c.Running:
			w.route(op{kind: opAdopt, taskID: t.ID, containerID: t.ContainerID})
			adopted++
		case t.State == task.Running && !ordered[t.ID] && !w.stopping[t.ID]:
			// Its container ended or went while the worker was away. (One with a restart or a
			// stop accepted is left to that order, queued already: the dead worker may have
			// stopped the container for it, and recording that as an end would drop the order.)
			w.route(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: "start-up"})
			checked++
		case t.State == task.Scheduled && !ordered[t.ID] && !w.stopping[t.ID]:
			// It was waiting to restart, or restarting, when the worker stopped; or it was
			// rebuilt from a container that was made but never started.
			w.route(op{kind: opRelaunch, taskID: t.ID})
			relaunched++
		case (t.State == task.Completed || t.State == task.Failed) && t.ContainerID != "" && !exists:
			w.route(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: string(task.ContainerDestroyed)})
		}
	}
	w.mu.Unlock()
	removable, unowned := w.noteOrphans(list)
	w.log.Info("recovered state", "tasks", w.store.Len(), "containers", len(list), "rebuilt", rebuilt, "adopted", adopted,
		"exited_or_gone", checked, "restarting", relaunched, "orders", len(w.store.Orders()),
		"superseded_or_deleted", removable, "unowned", unowned)
}

// rebuildFromLabels makes a task again from the labels of the worker's containers for every task
// it has no record of: the task's spec, its ID and the start that made the container. Of several
// containers of one task the latest start's is the task's (the rest were superseded by it). A
// container that has run is taken up as Running (an exit is then recorded as it was); one that
// was made but never started makes the task Scheduled, so that its start carries on. It returns
// how many tasks it rebuilt.
func (w *Worker) rebuildFromLabels(ctx context.Context, list []task.Container) int {
	latest := make(map[uuid.UUID]task.Container)
	for _, c := range list {
		if c.Spec == nil {
			continue
		}
		if cur, ok := latest[c.TaskID]; !ok || laterStart(c, cur) {
			latest[c.TaskID] = c
		}
	}
	n := 0
	for id, c := range latest {
		if _, known := w.store.Get(id); known {
			continue // known, or submitted again while the worker recovered: the record wins
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
		t.LastEvent = c.EventID
		if !info.Running && info.StartedAt.IsZero() {
			// Made, never started: the start was under way. It carries on (the runtime finds
			// the container by the start's name); it never counts as an exit.
			t.State = task.Scheduled
		} else {
			t.State = task.Running
			t.ContainerID = c.ID
			t.HostPorts = info.HostPorts
			t.StartTime = info.StartedAt
		}
		t.AddRecord(w.now(), task.RecordReceived, "rebuilt from container %s, which this worker made and has no record of", shortID(c.ID))
		mu := w.writeLock(id)
		mu.Lock()
		_, known := w.store.Get(id)
		if !known {
			err = w.store.Put(t)
		}
		mu.Unlock()
		if known {
			continue
		}
		if err != nil {
			w.log.Error("store rebuilt task", "task", id, "err", err)
			continue
		}
		// Of two rebuilt tasks with one name, the one whose container runs holds it: the other
		// is about to be found ended.
		if _, held := w.names.holder(t.Name); info.Running || !held {
			w.names.update(task.Task{}, t)
		}
		w.publish(task.Task{ID: id}, t)
		n++
		w.log.Info("rebuilt task from its container's labels", "task", id, "container", shortID(c.ID),
			"running", info.Running, "started", !info.StartedAt.IsZero())
	}
	return n
}

// laterStart reports whether container a was made by a later start of its task than b: starts of
// one task come one after another, each a restart of the one before.
func laterStart(a, b task.Container) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	if a.Spec != nil && b.Spec != nil && a.Spec.RestartCount != b.Spec.RestartCount {
		return a.Spec.RestartCount > b.Spec.RestartCount
	}
	return a.Running && !b.Running
}

// whose says what the worker may do with container c: nothing when it is a task's current
// container or that of a start under way ("" and true), remove it when it can prove that c is
// no longer wanted (the reason, and true), or only report it when it cannot say whose it is
// ("", false). Provably unwanted are containers of a task that has ended other than the one it
// keeps for its logs (the task was stopped or ended in another container), and containers of an
// earlier start of a task than its current one (superseded). A task's stored record is what
// proves it: a container of a task the worker has no record of is never removed.
func whose(c task.Container, t task.Task, known bool) (reason string, owned bool) {
	switch {
	case !known:
		return "", false
	case c.ID == t.ContainerID:
		return "", true
	case t.State == task.Completed || t.State == task.Failed:
		return fmt.Sprintf("its task has ended (%v)", t.State), true
	case c.EventID != t.LastEvent:
		return "superseded by a later start of its task", true
	case c.Spec == nil:
		return "", false // which restart of the start made it is unknown
	case c.Spec.RestartCount < t.RestartCount:
		return "superseded by a later restart of its task", true
	}
	return "", true // the container of the start under way
}

// noteOrphans marks the containers the worker may remove (see whose), and notes those it cannot
// say are whose, which it only reports. It forgets those that are gone and returns how many of
// each there are.
func (w *Worker) noteOrphans(list []task.Container) (removable, unowned int) {
	tasks := make(map[uuid.UUID]task.Task)
	for _, t := range w.store.List() {
		tasks[t.ID] = t
	}
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	present := make(map[string]bool, len(list))
	for _, c := range list {
		present[c.ID] = true
		t, known := tasks[c.TaskID]
		reason, owned := whose(c, t, known)
		switch {
		case !owned:
			delete(w.orphans, c.ID)
			if !w.reported[c.ID] {
				w.reported[c.ID] = true
				w.log.Warn("container labelled by this worker, of a task it has no record of; left alone",
					"container", shortID(c.ID), "task", c.TaskID)
			}
			unowned++
		case reason == "":
			delete(w.orphans, c.ID)
		default:
			if o, ok := w.orphans[c.ID]; !ok || o.reason != reason {
				w.orphans[c.ID] = orphan{since: now, reason: reason}
			}
			removable++
		}
	}
	for id := range w.orphans {
		if !present[id] {
			delete(w.orphans, id)
		}
	}
	for id := range w.reported {
		if !present[id] {
			delete(w.reported, id)
		}
	}
	return removable, unowned
}

// orphan is a container the worker may remove, since when, and why.
type orphan struct {
	since  time.Time
	reason string
}

// reapOrphans removes the containers that have been removable for the grace period, or, when the
// worker keeps them, reports each once.
func (w *Worker) reapOrphans(ctx context.Context) {
	now := w.now()
	var due []string
	reasons := make(map[string]string)
	w.mu.Lock()
	for id, o := range w.orphans {
		if now.Sub(o.since) >= w.orphanGrace {
			due = append(due, id)
			reasons[id] = o.reason
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
				w.log.Warn("orphan container: "+reasons[id]+"; not removed (--reap-orphans=false)", "container", shortID(id))
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
		w.log.Warn("removed orphan container: "+reasons[id], "container", shortID(id))
	}
}
