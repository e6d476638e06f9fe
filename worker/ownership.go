package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// ownership is what the worker knows of containers that are not a task's current one. Guarded
// by Worker.mu.
type ownership struct {
	orphans  map[string]orphan // containers the worker may remove, since when and why
	reported map[string]bool   // containers already reported: whose unknown, or removable and kept
}

// whose says what the worker may do with container c: nothing when it is a task's current
// container or that of a start under way ("" and true), remove it when it can prove that c is
// no longer wanted (the reason, and true), or only report it when it cannot say whose it is
// ("", false). Provably unwanted are containers of a task that has ended other than the one it
// keeps for its logs (the task was stopped or ended in another container), and containers of an
// earlier start of a task than its current one (superseded). A task's stored record is what
// proves it: a container of a task the worker has no record of is never removed.
func whose(c task.Container, t *task.Task, known bool) (reason string, owned bool) {
	switch {
	case !known:
		return "", false
	case c.ID == t.ContainerID:
		return "", true
	case t.State.Ended():
		return fmt.Sprintf("its task has ended (%v)", t.State), true
	case c.EventID != t.LastEvent:
		return "superseded by a later start of its task", true
	case !c.SpecRead:
		return "", false // which restart of the start made it is unknown
	case c.SpecRestartCount < t.RestartCount:
		return "superseded by a later restart of its task", true
	}
	return "", true // the container of the start under way
}

// noteOrphans marks the containers the worker may remove (see whose), and notes those it cannot
// say are whose, which it only reports. It forgets those that are gone and returns how many of
// each there are. tasks are the stored tasks by ID (Store.Refs: read only).
func (w *Worker) noteOrphans(list []task.Container, tasks map[uuid.UUID]*task.Task) (removable, unowned int) {
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
			delete(w.owned.orphans, c.ID)
			if !w.owned.reported[c.ID] {
				w.owned.reported[c.ID] = true
				w.log.Warn("container labelled by this worker, of a task it has no record of; left alone",
					"container", task.ShortID(c.ID), "task", c.TaskID)
			}
			unowned++
		case reason == "":
			delete(w.owned.orphans, c.ID)
		default:
			if o, ok := w.owned.orphans[c.ID]; !ok || o.reason != reason {
				w.owned.orphans[c.ID] = orphan{since: now, reason: reason}
			}
			removable++
		}
	}
	for id := range w.owned.orphans {
		if !present[id] {
			delete(w.owned.orphans, id)
		}
	}
	for id := range w.owned.reported {
		if !present[id] {
			delete(w.owned.reported, id)
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
	for id, o := range w.owned.orphans {
		if now.Sub(o.since) >= w.cfg.OrphanGrace {
			due = append(due, id)
			reasons[id] = o.reason
		}
	}
	w.mu.Unlock()
	for _, id := range due {
		if w.cfg.KeepOrphans {
			w.mu.Lock()
			reported := w.owned.reported[id]
			w.owned.reported[id] = true
			w.mu.Unlock()
			if !reported {
				w.log.Warn("orphan container: "+reasons[id]+"; not removed (--reap-orphans=false)", "container", task.ShortID(id))
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, w.cfg.StopTimeout)
		err := w.rt.Remove(rctx, id)
		cancel()
		if err != nil {
			w.log.Warn("cannot remove orphan container", "container", task.ShortID(id), "err", err)
			continue
		}
		w.mu.Lock()
		delete(w.owned.orphans, id)
		w.mu.Unlock()
		w.log.Warn("removed orphan container: "+reasons[id], "container", task.ShortID(id))
	}
}
