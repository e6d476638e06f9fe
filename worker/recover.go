package worker

import (
	"context"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Start-up recovery: what the store says and what the runtime has are brought together once,
// when Run starts, before any operation is applied.

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
	w.markUp(ctx)
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
	for _, t := range w.store.Refs(nil) {
		c, exists := byID[t.ContainerID]
		switch {
		case t.State == task.Running && exists && c.Running:
			w.route(ctx, op{kind: opAdopt, taskID: t.ID, containerID: t.ContainerID})
			adopted++
		case t.State == task.Running && !ordered[t.ID] && !w.stoppingLocked(t.ID):
			// Its container ended or went while the worker was away. (One with a restart or a
			// stop accepted is left to that order, queued already: the dead worker may have
			// stopped the container for it, and recording that as an end would drop the order.)
			w.route(ctx, op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: "start-up"})
			checked++
		case t.State == task.Scheduled && !ordered[t.ID] && !w.stoppingLocked(t.ID):
			// It was waiting to restart, or restarting, when the worker stopped; or it was
			// rebuilt from a container that was made but never started.
			w.route(ctx, op{kind: opRestartNow, taskID: t.ID})
			relaunched++
		case t.State.Ended() && t.ContainerID != "" && !exists:
			w.route(ctx, op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: string(task.ContainerDestroyed)})
		}
	}
	w.mu.Unlock()
	removable, unowned := w.noteOrphans(list, tasksByID(w.store.Refs(nil)))
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
		if !c.SpecRead {
			continue
		}
		if cur, ok := latest[c.TaskID]; !ok || laterStart(c, cur) {
			latest[c.TaskID] = c
		}
	}
	n := 0
	stored := tasksByID(w.store.Refs(nil)) // not Get, which copies each task
	for id, c := range latest {
		if stored[id] != nil {
			continue // known: the record wins (one submitted meanwhile is found below)
		}
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		info, err := w.rt.Inspect(ictx, c.ID)
		cancel()
		if err != nil {
			w.log.Warn("cannot rebuild task from its container", "task", id, "container", task.ShortID(c.ID), "err", err)
			continue
		}
		if info.Spec == nil { // List read the label; Inspect, which decodes it whole, did not
			w.log.Warn("cannot rebuild task from its container: its spec label does not read", "task", id, "container", task.ShortID(c.ID))
			continue
		}
		t := info.Spec.Clone()
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
		t.AddRecord(w.now(), task.RecordReceived, "rebuilt from container %s, which this worker made and has no record of", task.ShortID(c.ID))
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
		w.log.Info("rebuilt task from its container's labels", "task", id, "container", task.ShortID(c.ID),
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
	if a.SpecRead && b.SpecRead && a.SpecRestartCount != b.SpecRestartCount {
		return a.SpecRestartCount > b.SpecRestartCount
	}
	return a.Running && !b.Running
}
