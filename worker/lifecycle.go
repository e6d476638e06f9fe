package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// live is what the worker holds in memory about one task beyond its stored record: its restart
// pending restart, a running health check. Only the task's lane touches it (and Run,
// once every lane has finished).
type live struct {
	timer     *time.Timer        // the pending restart, if any
	gen       int                // bumped whenever a pending restart is cancelled
	stopProbe context.CancelFunc // stops the running health check, if any
	ip        string             // the container's address, for health checks
	oom       string             // the container the runtime reported an OOM kill of
}

func (l *live) cancelRestart() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.gen++
}

func (l *live) cancelProbe() {
	if l.stopProbe != nil {
		l.stopProbe()
		l.stopProbe = nil
	}
}

// enqueue routes o to its task's lane. It is how runtime events, reconciles, back-off timers
// and health checks reach a task.
func (w *Worker) enqueue(o op) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.route(o)
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

// start (re)starts a task as the event of o asks: a pending restart or health check is
// cancelled, the old container, if any, is removed, and the task goes to Scheduled with the
// event's spec, then Running. A start replayed after a crash is applied once: a task the event
// already brought past Scheduled is left alone, and a container the event already made is
// taken up rather than made again.
func (w *Worker) start(ctx, opCtx context.Context, log *slog.Logger, l *live, o op) error {
	ev := o.event
	id := ev.Task.ID
	old, _ := w.store.Get(id)
	if old.LastEvent == ev.ID.String() {
		if old.State != task.Scheduled && old.State != task.Pending {
			log.Info("start already applied", "event", ev.ID, "state", old.State)
			return nil
		}
		// The runtime finds the container this start made, if it made one, and carries on.
		return w.launch(ctx, opCtx, log, l, id, o.seq)
	}
	if !task.ValidTransition(old.State, task.Scheduled) {
		// The task ended for good (a stop applied after this restart was accepted).
		w.modify(id, func(t *task.Task) error {
			t.AddRecord(w.now(), task.RecordNotRestarting, "restart event %s came after the task was %v", ev.ID, t.State)
			return nil
		})
		log.Warn("restart event dropped: the task has ended", "event", ev.ID, "state", old.State)
		return nil
	}
	if err := w.policy.Check(ev.Task); err != nil && old.State == task.Running && old.ContainerID != "" {
		// A restart accepted before the worker restarted with less allowed: the container
		// running now is left to run, rather than removed for a start that cannot happen.
		w.modify(id, func(t *task.Task) error {
			t.AddRecord(w.now(), task.RecordNotRestarting, "restart event %s not applied, the running container is left to run: %v", ev.ID, err)
			return nil
		})
		log.Warn("restart event not applied: the host access it asks for is not allowed", "event", ev.ID, "err", err)
		return nil
	}
	l.cancelRestart()
	l.cancelProbe()
	if old.ContainerID != "" {
		if err := w.removeContainer(opCtx, log, old, old.ContainerID); err != nil {
			if unavailable(err) {
				return &parkedError{op: o, err: err}
			}
			return err
		}
	}
	_, err := w.modify(id, func(t *task.Task) error {
		next := specOf(ev.Task)
		next.State = t.State
		next.Events = t.Events
		next.LastEvent = ev.ID.String()
		if err := transition(&next, task.Scheduled); err != nil {
			return err
		}
		if t.LastEvent != "" { // a restart: a new task's Received record came with its submission
			next.AddRecord(w.now(), task.RecordReceived, "restart requested by event %s", ev.ID)
		}
		*t = next
		return nil
	})
	if err != nil {
		return err
	}
	return w.launch(ctx, opCtx, log, l, id, o.seq)
}

// launch starts a container for a Scheduled task. The task ends Running, or, when the start
// fails, Failed or back in Scheduled waiting to restart, as its policy says; a task with a stop
// accepted is not started, and the stop ends it. When the runtime
// does not answer, the task waits in Scheduled and the launch is parked: a runtime that is away
// fails no task. seq is the stored order the launch completes, if any.
//
// A launch may be tried again after a crash or a lost answer: the runtime then carries on with
// the container the start already made (it is named for the start), in whatever state it is.
// One that has run and ended is recorded as started, then its exit as it was.
func (w *Worker) launch(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, seq uint64) error {
	t, ok := w.store.Get(id)
	if !ok || t.State != task.Scheduled {
		return nil
	}
	// Every start comes here: the first, a restart, one after recovery, a replayed one. Each
	// is checked against the host access the worker allows now, which may be less than when
	// the task was accepted.
	if err := w.policy.Check(t); err != nil {
		return w.refuseOrTakeUp(ctx, opCtx, log, l, t, seq, err)
	}
	w.slotWaiters.Add(1)
	select {
	case w.startSlots <- struct{}{}:
		w.slotWaiters.Add(-1)
	case <-ctx.Done():
		w.slotWaiters.Add(-1)
		// Shutting down: the task stays Scheduled (its order stored, if any) and starts when
		// the worker runs again.
		return &parkedError{op: op{kind: opLaunch, taskID: id, seq: seq}, err: ctx.Err()}
	}
	if w.isStopping(id) {
		// Deleted before it could start: the stop, queued behind, ends it without a container.
		<-w.startSlots
		log.Info("start skipped: a stop of the task is accepted")
		return nil
	}
	sctx, cancel := context.WithTimeout(opCtx, w.startTimeout)
	// The Created record is stored while the runtime goes on to start the container, so that
	// its write (a sync on a durable store) is not on the way to Running; every later write
	// waits for it, so that the records keep their order.
	var created sync.WaitGroup
	c, err := w.rt.Start(sctx, t, func(step task.StartStep) {
		at := w.now()
		created.Wait()
		if step.Type == task.RecordCreated && step.Pull == nil {
			created.Add(1)
			go func() {
				defer created.Done()
				w.progress(log, id, step, at)
			}()
			return
		}
		w.progress(log, id, step, at)
	})
	created.Wait()
	cancel()
	<-w.startSlots

	if err != nil && unavailable(err) {
		w.modify(id, func(t *task.Task) error {
			t.Pull = nil
			t.Error = "waiting for the container runtime: " + err.Error()
			return nil
		})
		return &parkedError{op: op{kind: opLaunch, taskID: id, seq: seq}, err: err}
	}
	if task.ErrorCode(err) == task.EFORBIDDEN {
		// The runtime found, pinning a bind source, that it now leads out of the allowed paths.
		return w.refuseOrTakeUp(ctx, opCtx, log, l, t, seq, err)
	}
	if err != nil {
		// An earlier attempt of this start may have started its container before the worker
		// died, and this attempt failed before it got to it (a bind source changed since, say):
		// that container is the task's, not a failure.
		if c, found, ferr := w.startedBefore(opCtx, t); ferr == nil && found && (c.Running || !c.StartedAt.IsZero()) {
			return w.takeUpStarted(ctx, opCtx, log, l, id, c)
		}
		log.Warn("task failed to start", "err", err)
		_, merr := w.modify(id, func(t *task.Task) error {
			t.Pull = nil
			t.FinishTime = w.now()
			return w.ended(ctx, l, t, task.Outcome{StartFailed: true}, err.Error())
		})
		return merr
	}
	if err := w.markRunning(ctx, log, l, id, c); err != nil {
		// The container runs but the task cannot say so; remove it rather than lose track of it.
		w.removeContainer(opCtx, log, t, c.ID)
		return err
	}
	if !c.Running {
		log.Info("the container of this start ran and ended before the worker could follow it", "container", shortID(c.ID))
		return w.check(ctx, opCtx, log, l, id, c.ID, "start-up", nil)
	}
	return nil
}

// refuseOrTakeUp handles a start the worker's policy does not allow (why says which field and
// flag). An earlier attempt of the same start that the Engine carried out before the worker died
// made a container that is the task's: it is taken up as it is (a running one is left to run,
// reported), never disowned. A container that attempt made and never started is removed: it
// never ran, and will not. Otherwise the task is refused.
func (w *Worker) refuseOrTakeUp(ctx, opCtx context.Context, log *slog.Logger, l *live, t task.Task, seq uint64, why error) error {
	c, found, err := w.startedBefore(opCtx, t)
	switch {
	case err != nil && unavailable(err):
		return &parkedError{op: op{kind: opLaunch, taskID: t.ID, seq: seq}, err: err}
	case err != nil:
		return fmt.Errorf("look for a container of this start before refusing it: %w", err)
	case found && (c.Running || !c.StartedAt.IsZero()):
		return w.takeUpStarted(ctx, opCtx, log, l, t.ID, c)
	case found:
		if err := w.removeContainer(opCtx, log, t, c.ID); err != nil {
			return err
		}
	}
	return w.refuse(log, l, t.ID, why)
}

// startedBefore returns the container an earlier attempt of t's current start made (its event
// and restart), if the runtime has one, in its current state.
func (w *Worker) startedBefore(ctx context.Context, t task.Task) (task.Container, bool, error) {
	if t.LastEvent == "" {
		return task.Container{}, false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	list, err := w.rt.List(lctx)
	cancel()
	if err != nil {
		return task.Container{}, false, err
	}
	for _, c := range list {
		if c.TaskID != t.ID || c.EventID != t.LastEvent || (c.Spec != nil && c.Spec.RestartCount != t.RestartCount) {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		info, err := w.rt.Inspect(ictx, c.ID)
		cancel()
		switch {
		case task.ErrorCode(err) == task.ENOTFOUND:
			continue
		case err != nil:
			return task.Container{}, false, err
		}
		return info, true, nil
	}
	return task.Container{}, false, nil
}

// takeUpStarted makes container c, which an earlier attempt of the task's start started, the
// task's: Running (markRunning reports host access the worker no longer allows), and its exit
// recorded when it has ended.
func (w *Worker) takeUpStarted(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, c task.Container) error {
	log.Info("an earlier attempt of this start started its container; it is taken up", "container", shortID(c.ID))
	if err := w.markRunning(ctx, log, l, id, c); err != nil {
		return err
	}
	if !c.Running {
		return w.check(ctx, opCtx, log, l, id, c.ID, "start-up", nil)
	}
	return nil
}

// refuse ends a Scheduled task that the worker's policy does not let start (err says which
// field, and which flag would allow it): it ends Failed, and is not restarted.
func (w *Worker) refuse(log *slog.Logger, l *live, id uuid.UUID, err error) error {
	log.Warn("task not started: the host access it asks for is not allowed", "err", err)
	l.cancelRestart()
	l.cancelProbe()
	_, merr := w.modify(id, func(t *task.Task) error {
		if err := transition(t, task.Failed); err != nil {
			return err
		}
		now := w.now()
		t.Pull = nil
		t.FinishTime = now
		t.Error = "not started: " + err.Error()
		if t.RestartPolicy != "" && t.RestartPolicy != task.RestartNo {
			t.AddRecord(now, task.RecordNotRestarting, "the worker does not allow what the task asks for")
		}
		t.AddRecord(now, task.RecordFailed, "%s", t.Error)
		return nil
	})
	return merr
}

// noteRevoked records on a task whose container is running that the worker's policy no longer
// allows what the task asks for: the container is left to run, but the task will not be
// started again.
func (w *Worker) noteRevoked(log *slog.Logger, t task.Task) {
	err := w.policy.Check(t)
	if err == nil {
		return
	}
	log.Warn("task's container runs with host access this worker no longer allows; it is left to run, and will not be started again", "err", err)
	w.modify(t.ID, func(t *task.Task) error {
		t.AddRecord(w.now(), task.RecordNotRestarting,
			"the container keeps running, but the task will not be started again: %v", err)
		return nil
	})
}

// relaunch carries out a launch that waited for the runtime. The first attempt may have made a
// container after all (its answer lost); launch carries on with that one.
func (w *Worker) relaunch(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, seq uint64) error {
	return w.launch(ctx, opCtx, log, l, id, seq)
}

// markRunning records that the task runs in container c, and starts its health check.
func (w *Worker) markRunning(ctx context.Context, log *slog.Logger, l *live, id uuid.UUID, c task.Container) error {
	t, err := w.modify(id, func(t *task.Task) error {
		if err := transition(t, task.Running); err != nil {
			return err
		}
		t.ContainerID = c.ID
		t.HostPorts = c.HostPorts
		t.StartTime = c.StartedAt
		if t.StartTime.IsZero() {
			t.StartTime = w.now()
		}
		t.FinishTime = time.Time{}
		t.ExitCode = 0
		t.Error = ""
		t.Pull = nil
		t.LastHealthCheck = nil
		t.HealthStatus = c.Health
		if hasOwnCheck(*t) {
			t.HealthStatus = task.HealthStarting
		}
		t.Paused = c.Paused // a container taken up after a crash may be
		t.AddRecord(t.StartTime, task.RecordStarted, "container %s", shortID(c.ID))
		return nil
	})
	if err != nil {
		return err
	}
	w.watchHealth(ctx, log, l, t, c)
	log.Info("task running", "container", shortID(c.ID), "image", t.Image, "restarts", t.RestartCount)
	w.noteRevoked(log, t) // a container made before the worker restarted with less allowed
	return nil
}

// watchHealth starts the task's health check against container c, if it has one and is not
// paused.
func (w *Worker) watchHealth(ctx context.Context, log *slog.Logger, l *live, t task.Task, c task.Container) {
	l.cancelProbe()
	l.ip = c.IPAddress
	if t.Paused {
		return // checked again when it is unpaused
	}
	if p, ok := probeFor(t, c); ok {
		pctx, stop := context.WithCancel(ctx)
		l.stopProbe = stop
		w.wg.Add(1)
		go w.runProbe(pctx, log, t.ID, c.ID, p)
	}
}

// adopt takes up a task's container found at start-up, without restarting it: a running
// container keeps running and gets its health check back; one that ended meanwhile is checked
// like any exit.
func (w *Worker) adopt(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, containerID string) error {
	t, _ := w.store.Get(id)
	if t.ContainerID != containerID || t.State != task.Running {
		return nil
	}
	ictx, cancel := context.WithTimeout(opCtx, 30*time.Second)
	c, err := w.rt.Inspect(ictx, containerID)
	cancel()
	if unavailable(err) {
		return &parkedError{op: op{kind: opAdopt, taskID: id, containerID: containerID}, err: err}
	}
	if err != nil || !c.Running {
		return w.check(ctx, opCtx, log, l, id, containerID, "start-up", nil)
	}
	t, err = w.modify(id, func(t *task.Task) error {
		t.HostPorts = c.HostPorts
		if c.Health != "" && !hasOwnCheck(*t) {
			t.HealthStatus = c.Health
		}
		if c.Paused != t.Paused {
			t.Paused = c.Paused
			if c.Paused {
				t.AddRecord(w.now(), task.RecordPaused, "container %s found paused at start-up; health checks suspended", shortID(c.ID))
			} else {
				t.AddRecord(w.now(), task.RecordUnpaused, "container %s found unpaused at start-up", shortID(c.ID))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.watchHealth(ctx, log, l, t, c)
	log.Info("took up running container", "container", shortID(c.ID), "restarts", t.RestartCount)
	w.noteRevoked(log, t)
	return nil
}

// progress records a start step the runtime reports at the time at, and pull progress while
// it pulls.
func (w *Worker) progress(log *slog.Logger, id uuid.UUID, step task.StartStep, at time.Time) {
	// Started is recorded with the change to Running (markRunning), so that the record and the
	// state it reports come together; a step with nothing to record writes nothing, which on a
	// durable store would cost a sync.
	record := step.Type != "" && step.Type != task.RecordStarted
	if step.Pull != nil || record {
		w.modify(id, func(t *task.Task) error {
			if step.Pull != nil {
				p := *step.Pull
				t.Pull = &p
			}
			if record {
				t.AddRecord(at, step.Type, "%s", step.Message)
			}
			return nil
		})
	}
	if step.Pull != nil {
		log.Info("pulling image", "layers", step.Pull.Layers, "layers_done", step.Pull.LayersDone,
			"bytes", step.Pull.Bytes, "bytes_total", step.Pull.BytesTotal)
	} else if step.Type != "" {
		log.Debug("start step", "step", step.Type, "detail", step.Message)
	}
}

// ended records that the task's run ended with o (reason says how) and applies the restart
// policy: the task goes back to Scheduled with a back-off timer, or ends Completed or Failed. A
// task with a stop accepted and not yet applied ends Completed. It changes t, which the caller
// stores.
func (w *Worker) ended(ctx context.Context, l *live, t *task.Task, o task.Outcome, reason string) error {
	l.cancelProbe()
	spec := task.RestartSpec{}
	if t.Restart != nil {
		spec = *t.Restart
	}
	spec = spec.WithDefaults()
	if !o.StartFailed && !t.StartTime.IsZero() && t.FinishTime.Sub(t.StartTime) >= spec.ResetAfter.D() {
		t.RestartStreak = 0 // a long, good run: the back-off starts over
	}
	now := w.now()
	if w.isStopping(t.ID) {
		// The run ended before a stop accepted while it ran was applied: the stop decides, and a
		// stopped task ends Completed, never to restart. Its records keep how the run ended.
		if err := transition(t, task.Completed); err != nil {
			return err
		}
		t.Error = ""
		t.AddRecord(now, task.RecordStopped, "stopped by request; the run had already ended (%s)", reason)
		return nil
	}
	d := task.NextRestart(t.RestartPolicy, spec, o, t.RestartStreak, w.rand())
	if d.Restart {
		if err := transition(t, task.Scheduled); err != nil {
			return err
		}
		at := now.Add(d.Delay)
		t.Error = joinReason(reason, fmt.Sprintf("back-off: restarting in %s (at %s)",
			d.Delay.Round(time.Millisecond), at.UTC().Format(time.RFC3339)))
		t.AddRecord(now, task.RecordRestarting, "in %s", d.Delay.Round(time.Millisecond))
		// Counted when decided, so that a restart replayed after a crash counts once; both stop at
		// their maximum rather than overflow.
		t.RestartCount = task.SaturatingInc(t.RestartCount)
		t.RestartStreak = task.SaturatingInc(t.RestartStreak)
		l.cancelRestart()
		gen, id := l.gen, t.ID
		l.timer = time.AfterFunc(d.Delay, func() { w.enqueue(op{kind: opRestart, taskID: id, gen: gen}) })
		return nil
	}
	final := task.Completed
	if o.Failed() {
		final = task.Failed
	}
	if err := transition(t, final); err != nil {
		return err
	}
	t.Error = ""
	if final == task.Failed {
		t.Error = reason
	}
	if t.RestartPolicy != "" && t.RestartPolicy != task.RestartNo {
		t.AddRecord(now, task.RecordNotRestarting, "%s", d.Reason)
		if final == task.Failed {
			t.Error = joinReason(reason, "not restarting: "+d.Reason)
		}
	}
	if final == task.Failed {
		t.AddRecord(now, task.RecordFailed, "%s", reason)
	}
	return nil
}

// restartDue starts a task again when its back-off ends, unless something else (a stop, a
// restart event) has happened to it since.
func (w *Worker) restartDue(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, gen int) error {
	if gen != l.gen || l.timer == nil {
		return nil
	}
	l.timer = nil
	return w.restartNow(ctx, opCtx, log, l, id)
}

// restartNow starts a Scheduled task again in a new container, removing the old one. When the
// container of the task's current start already exists (a restart interrupted by a crash of
// the worker), launch carries on with it instead.
func (w *Worker) restartNow(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID) error {
	t, _ := w.store.Get(id)
	if t.State != task.Scheduled || w.isStopping(id) {
		return nil
	}
	if t.ContainerID != "" {
		if err := w.removeContainer(opCtx, log, t, t.ContainerID); err != nil {
			if unavailable(err) {
				return &parkedError{op: op{kind: opRelaunch, taskID: id}, err: err}
			}
			// Do not let an old container hold the task back: it becomes an orphan, and the
			// reaper removes it.
			log.Warn("cannot remove the old container; restarting anyway", "container", shortID(t.ContainerID), "err", err)
		}
		if _, err := w.modify(id, func(t *task.Task) error {
			t.ContainerID = ""
			t.HostPorts = nil
			t.HealthStatus = ""
			t.LastHealthCheck = nil
			return nil
		}); err != nil {
			return err
		}
	}
	log.Info("restarting task", "restart_count", t.RestartCount, "streak", t.RestartStreak)
	return w.launch(ctx, opCtx, log, l, id, 0)
}

// isStopping reports whether a stop of the task is accepted and not yet applied.
func (w *Worker) isStopping(id uuid.UUID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping[id]
}

// stop stops and removes the task's container. A task that has not ended (Pending, Scheduled
// before its start or waiting in back-off to restart, Running) ends Completed, with a Stopped
// record saying so; a task that already ended keeps its state. Either way it never restarts.
func (w *Worker) stop(opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, seq uint64) (err error) {
	defer func() {
		var parked *parkedError
		if errors.As(err, &parked) {
			return // still stopping
		}
		w.mu.Lock()
		delete(w.stopping, id)
		w.mu.Unlock()
	}()
	backingOff := l.timer != nil
	t, _ := w.store.Get(id)
	if t.ContainerID == "" && !t.State.Ended() {
		// A start under way when the worker died may have made (and started) its container
		// without the task saying so: that container goes with the stop, not after the
		// orphan grace.
		c, found, err := w.startedBefore(opCtx, t)
		switch {
		case err != nil && unavailable(err):
			return &parkedError{op: op{kind: opStop, taskID: id, seq: seq}, err: err}
		case err != nil:
			return err
		case found:
			t.ContainerID = c.ID
		}
	}
	if t.ContainerID != "" {
		w.modify(id, func(t *task.Task) error {
			t.AddRecord(w.now(), task.RecordKilling, "stop requested")
			return nil
		})
		if err := w.removeContainer(opCtx, log, t, t.ContainerID); err != nil {
			if unavailable(err) {
				return &parkedError{op: op{kind: opStop, taskID: id, seq: seq}, err: err}
			}
			return err
		}
	}
	// Only now, the container gone: a stop the runtime refused leaves the task as it was, its
	// health check running and its restart armed. (What either sends meanwhile queues behind
	// this stop, and finds the task stopped.)
	l.cancelRestart()
	l.cancelProbe()
	if t.ContainerID == "" && t.State.Ended() {
		return nil // nothing to stop, nothing to record: a write would change nothing
	}
	_, err = w.modify(id, func(t *task.Task) error {
		now := w.now()
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
		log.Info("task stopped")
	}
	return err
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

// removeContainer stops a container, giving it the task's grace period, and removes it.
func (w *Worker) removeContainer(ctx context.Context, log *slog.Logger, t task.Task, id string) error {
	ctx, cancel := context.WithTimeout(ctx, w.stopTimeout+time.Duration(t.StopTimeout)*time.Second)
	defer cancel()
	if err := w.rt.Stop(ctx, id, time.Duration(t.StopTimeout)*time.Second); err != nil {
		return fmt.Errorf("stop container %s: %w", shortID(id), err)
	}
	if err := w.rt.Remove(ctx, id); err != nil {
		return fmt.Errorf("remove container %s: %w", shortID(id), err)
	}
	log.Debug("container removed", "container", shortID(id))
	return nil
}

// check finds out what became of the task's container containerID and records it: an exit, or
// the container's disappearance. It ignores containers that are no longer the task's.
func (w *Worker) check(ctx, opCtx context.Context, log *slog.Logger, l *live, id uuid.UUID, containerID, reason string, died *task.ContainerEvent) error {
	t, _ := w.store.Get(id)
	if containerID == "" || t.ContainerID != containerID {
		return nil
	}
	if reason == string(task.ContainerOOM) {
		// The Engine's OOM event and its OOMKilled flag race each other; either one is the truth.
		l.oom = containerID
		if t.State != task.Running {
			return w.lateOOM(log, id, containerID)
		}
	}
	if t.State != task.Running {
		if reason != string(task.ContainerDestroyed) {
			return nil
		}
		// The container of an ended task, kept for its logs, was removed outside cube.
		_, err := w.modify(id, func(t *task.Task) error {
			if t.ContainerID != containerID {
				return nil
			}
			t.ContainerID = ""
			if t.State == task.Failed {
				t.Error = joinReason(t.Error, "container removed outside cube")
			}
			return nil
		})
		return err
	}
	var c task.Container
	var err error
	if died != nil && died.ExitCode != 128+9 {
		// The die event says how the container ended. Inspecting it now would wait for the
		// Engine's exit clean-up, which holds the container's lock for tens of milliseconds. An
		// OOM kill comes as an oom event before the die event; exit code 137 (SIGKILL) inspects
		// anyway, for the Engine's OOMKilled flag in case the oom event was missed.
		c = task.Container{ID: containerID, ExitCode: died.ExitCode, FinishedAt: died.Time}
	} else {
		ictx, cancel := context.WithTimeout(opCtx, 30*time.Second)
		c, err = w.rt.Inspect(ictx, containerID)
		cancel()
	}
	switch {
	case task.ErrorCode(err) == task.ENOTFOUND:
		log.Warn("task's container removed outside cube", "container", shortID(containerID))
		_, err := w.modify(id, func(t *task.Task) error {
			t.ContainerID = ""
			t.FinishTime = w.now()
			t.AddRecord(t.FinishTime, task.RecordExited, "container removed outside cube")
			return w.ended(ctx, l, t, task.Outcome{Vanished: true}, "container removed outside cube")
		})
		return err
	case err != nil:
		// The runtime did not answer: the task's state is unknown, not failed. The next reconcile
		// asks again.
		return fmt.Errorf("inspect container %s after %s: %w", shortID(containerID), reason, err)
	case c.Running:
		return nil
	}
	c.OOMKilled = c.OOMKilled || l.oom == containerID
	_, err = w.modify(id, func(t *task.Task) error {
		t.ExitCode = c.ExitCode
		t.FinishTime = c.FinishedAt
		if t.FinishTime.IsZero() {
			t.FinishTime = w.now()
		}
		why := exitReason(c)
		if c.OOMKilled {
			t.AddRecord(t.FinishTime, task.RecordOOMKilled, "exit code %d", c.ExitCode)
		} else {
			t.AddRecord(t.FinishTime, task.RecordExited, "%s", why)
		}
		return w.ended(ctx, l, t, task.Outcome{ExitCode: c.ExitCode, OOMKilled: c.OOMKilled}, why)
	})
	if err == nil {
		log.Info("task's container exited", "exit_code", c.ExitCode, "oom", c.OOMKilled)
	}
	return err
}

// lateOOM corrects an exit recorded before the runtime's OOM event arrived: the reason becomes
// OOMKilled. The restart decision already made stands (an OOM kill is a failure either way).
func (w *Worker) lateOOM(log *slog.Logger, id uuid.UUID, containerID string) error {
	_, err := w.modify(id, func(t *task.Task) error {
		if t.ContainerID != containerID || strings.HasPrefix(t.Error, "OOMKilled") {
			return nil
		}
		was := exitReason(task.Container{ExitCode: t.ExitCode})
		if !strings.HasPrefix(t.Error, was) {
			return nil // the run ended for another reason (a stop, a health check)
		}
		t.Error = "OOMKilled" + strings.TrimPrefix(t.Error, was)
		t.AddRecord(w.now(), task.RecordOOMKilled, "exit code %d", t.ExitCode)
		log.Info("the runtime reports the container was killed for lack of memory", "container", shortID(containerID))
		return nil
	})
	return err
}

// exitReason says why a container ended, from what the runtime reports: never a guess of OOM
// from the exit code.
func exitReason(c task.Container) string {
	switch {
	case c.OOMKilled:
		return "OOMKilled"
	case c.ExitCode > 128 && c.ExitCode <= 128+64:
		sig := c.ExitCode - 128
		return fmt.Sprintf("killed by signal %d%s (exit code %d)", sig, signalName(sig), c.ExitCode)
	}
	return fmt.Sprintf("exited with code %d", c.ExitCode)
}

func signalName(sig int) string {
	names := map[int]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"}
	if n, ok := names[sig]; ok {
		return " (" + n + ")"
	}
	return ""
}
