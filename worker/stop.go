package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// stop stops and removes the task's container. A task that has not ended (Pending, Scheduled
// before its start or waiting in back-off to restart, Running) ends Completed, with a Stopped
// record saying so; a task that already ended keeps its state. Either way it never restarts. A
// stop the runtime refuses leaves the task as it was: its health check and its pending restart
// are cancelled only once its container is gone (a check that a parked stop ended starts again). The state changes only through the transition
// table.
func (r *runner) stop(ctx context.Context, seq uint64) (err error) {
	defer func() {
		var parked *parkedError
		if errors.As(err, &parked) {
			return // still stopping
		}
		r.w.mu.Lock()
		r.stopping = false
		r.w.mu.Unlock()
	}()
	backingOff := r.backingOff()
	t, _ := r.w.store.Get(r.id)
	if t.ContainerID == "" && !t.State.Ended() {
		// A start under way when the worker died may have made (and started) its container
		// without the task saying so: that container goes with the stop, not after the
		// orphan grace.
		c, found, err := r.startedBefore(ctx, t)
		switch {
		case err != nil && unavailable(err):
			return r.parkStop(seq, err)
		case err != nil:
			return err
		case found:
			t.ContainerID = c.ID
		}
	}
	if t.ContainerID != "" {
		r.note(task.RecordKilling, "stop requested")
		if err := r.removeContainer(ctx, t, t.ContainerID); err != nil {
			if unavailable(err) {
				return r.parkStop(seq, err)
			}
			r.resumeProbe(ctx, t)
			return err
		}
	}
	// Only now, the container gone: a stop the runtime refused leaves the task as it was, its
	// health check running and its restart armed. (What either sends meanwhile queues behind
	// this stop, and finds the task stopped.)
	r.cancelRestart()
	r.cancelProbe()
	if t.ContainerID == "" && t.State.Ended() {
		return nil // nothing to stop, nothing to record: a write would change nothing
	}
	_, err = r.modify(func(t *task.Task) error {
		now := r.w.now()
		if t.ContainerID != "" {
			t.AddRecord(now, task.RecordKilled, "container stopped and removed")
		}
		t.ContainerID = ""
		if t.State.Ended() {
			return nil
		}
		was := stoppedWhile(*t, backingOff)
		if err := transition(t, task.Completed); err != nil {
			return err
		}
		t.FinishTime = now
		t.Error = ""
		t.AddRecord(now, task.RecordStopped, "stopped by request %s", was)
		return nil
	})
	if err == nil {
		r.log.Info("task stopped")
	}
	return err
}

// parkStop parks the stop seq until the runtime answers. It ends the task's health check: the
// check's verdict cannot matter any more (the stop applies once the runtime answers), and its
// results would only queue behind the stop for as long as the runtime does not answer. The
// pending restart stays armed: what it sends queues behind the stop and finds the task stopped.
func (r *runner) parkStop(seq uint64, err error) error {
	r.cancelProbe()
	return &parkedError{op: op{kind: opStop, taskID: r.id, seq: seq}, err: err}
}

// resumeProbe starts the health check of t again after the runtime refused its stop, when a
// park of the stop ended it (parkStop): the task goes on running, and is checked as before.
func (r *runner) resumeProbe(ctx context.Context, t task.Task) {
	if r.stopProbe != nil || t.State != task.Running || t.ContainerID == "" {
		return // still checked, or nothing to check
	}
	r.watchHealth(ctx, t, task.Container{ID: t.ContainerID, IPAddress: r.ip, HostPorts: t.HostPorts})
}

// stoppedWhile says what a task that has not ended was doing when a stop ended it.
func stoppedWhile(t task.Task, backingOff bool) string {
	switch {
	case t.State == task.Running:
		return "while it ran"
	case backingOff:
		return "while it waited to restart"
	case t.RestartCount > 0 || !t.StartTime.IsZero():
		return "before it could restart"
	}
	return "before it started"
}

// removeContainer stops container id of task t, giving it the task's grace period, and removes
// it.
func (r *runner) removeContainer(ctx context.Context, t task.Task, id string) error {
	grace := time.Duration(t.StopTimeout) * time.Second
	ctx, cancel := bounded(ctx, r.w.cfg.StopTimeout+grace)
	defer cancel()
	if err := r.w.rt.Stop(ctx, id, grace); err != nil {
		return fmt.Errorf("stop container %s: %w", task.ShortID(id), err)
	}
	if err := r.w.rt.Remove(ctx, id); err != nil {
		return fmt.Errorf("remove container %s: %w", task.ShortID(id), err)
	}
	r.log.Debug("container removed", "container", task.ShortID(id))
	return nil
}
