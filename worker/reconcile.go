package worker

import (
	"context"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// The path of a Docker event back to its task: watch turns each container event into an
// operation for the task its container is labelled with, and enqueue hands it to the loop, which
// routes it to the task's runner. reconcile is the safety net under the stream.

// watch follows the runtime's container events for as long as ctx lives. When the stream breaks
// it subscribes again, resuming from the last event it saw, and reconciles once subscribed, so
// that nothing that happened in between is missed.
func (w *Worker) watch(ctx context.Context, since time.Time) {
	defer w.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		subscribed := w.now()
		sctx, cancel := context.WithCancel(ctx)
		w.mu.Lock()
		w.outage.watchCancel = cancel
		w.mu.Unlock()
		err := w.rt.Watch(sctx, since, func(ev task.ContainerEvent) {
			if ev.Time.After(since) {
				since = ev.Time
			}
			switch ev.Kind {
			case task.ContainerDied:
				w.enqueue(op{kind: opCheck, taskID: ev.TaskID, containerID: ev.ContainerID, reason: string(ev.Kind), died: &ev})
			case task.ContainerOOM, task.ContainerDestroyed:
				w.enqueue(op{kind: opCheck, taskID: ev.TaskID, containerID: ev.ContainerID, reason: string(ev.Kind)})
			case task.ContainerHealth:
				w.enqueue(op{kind: opHealth, taskID: ev.TaskID, containerID: ev.ContainerID, health: ev.Health})
			case task.ContainerPaused, task.ContainerUnpaused:
				w.enqueue(op{kind: opPause, taskID: ev.TaskID, containerID: ev.ContainerID, paused: ev.Kind == task.ContainerPaused})
			}
		})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if w.now().Sub(subscribed) > time.Minute {
			backoff = 100 * time.Millisecond // the stream was healthy for a while
		}
		w.log.Warn("container event stream broke; subscribing again", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
		w.reconcile(ctx)
	}
}

// reconcileLoop compares the runtime with the store now and then, as a safety net under the
// event stream.
func (w *Worker) reconcileLoop(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.reconcile(ctx)
		}
	}
}

// reconcile lists the runtime's containers and queues a check for every Running task whose
// container is not running or not there.
func (w *Worker) reconcile(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	list, err := w.rt.List(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("reconcile: cannot list containers", "err", err)
			w.mu.Lock()
			w.markDownLocked(err)
			w.mu.Unlock()
		}
		return
	}
	w.markUp(ctx)
	// Pointers to the stored tasks, which are immutable (read only): a copy of each would cost
	// the size of a Task per tracked task every ReconcileInterval.
	refs := w.store.Refs(nil)
	w.noteOrphans(list, tasksByID(refs))
	w.reapOrphans(ctx)
	running := make(map[string]bool, len(list))
	paused := make(map[string]bool)
	for _, c := range list {
		running[c.ID] = c.Running
		if c.Paused {
			paused[c.ID] = true
		}
	}
	for _, t := range refs {
		if t.State != task.Running || t.ContainerID == "" {
			continue
		}
		if isRunning, exists := running[t.ContainerID]; !exists {
			w.enqueue(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: "reconcile: container missing"})
		} else if !isRunning {
			w.enqueue(op{kind: opCheck, taskID: t.ID, containerID: t.ContainerID, reason: "reconcile: container not running"})
		} else if paused[t.ContainerID] != t.Paused {
			// A pause or unpause the event stream did not bring.
			w.enqueue(op{kind: opPause, taskID: t.ID, containerID: t.ContainerID, paused: paused[t.ContainerID]})
		}
	}
	w.log.Debug("reconciled with the container runtime", "containers", len(list))
}

// tasksByID maps the tasks of refs by ID.
func tasksByID(refs []*task.Task) map[uuid.UUID]*task.Task {
	m := make(map[uuid.UUID]*task.Task, len(refs))
	for _, t := range refs {
		m[t.ID] = t
	}
	return m
}

// sleep waits for d or until ctx is done, and reports whether the full time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
