package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// The way to Running: a start event (start), a start that waited for the runtime (launch), a
// restart when a back-off ends (restartDue, restartNow), a container found at start-up (adopt).
// Each is a method of the task's runner, applied by its goroutine.

// start (re)starts a task as the event of o asks: a pending restart or health check is
// cancelled, the old container, if any, is removed, and the task goes to Scheduled with the
// event's spec, then Running. A start replayed after a crash is applied once: a task the event
// already brought past Scheduled is left alone, and a container the event already made is
// taken up rather than made again.
func (r *runner) start(ctx context.Context, o op) error {
	w := r.w
	ev := *o.event
	old, _ := w.store.Get(r.id)
	if old.LastEvent == ev.ID.String() {
		if old.State != task.Scheduled && old.State != task.Pending {
			r.log.Info("start already applied", "event", ev.ID, "state", old.State)
			return nil
		}
		// The runtime finds the container this start made, if it made one, and carries on.
		return r.launch(ctx, o.seq)
	}
	if !task.ValidTransition(old.State, task.Scheduled) {
		// The task ended for good (a stop applied after this restart was accepted).
		r.note(task.RecordNotRestarting, "restart event %s came after the task was %v", ev.ID, old.State)
		r.log.Warn("restart event dropped: the task has ended", "event", ev.ID, "state", old.State)
		return nil
	}
	if err := w.cfg.Policy.Check(ev.Task); err != nil && old.State == task.Running && old.ContainerID != "" {
		// A restart accepted before the worker restarted with less allowed: the container
		// running now is left to run, rather than removed for a start that cannot happen.
		r.note(task.RecordNotRestarting, "restart event %s not applied, the running container is left to run: %v", ev.ID, err)
		r.log.Warn("restart event not applied: the host access it asks for is not allowed", "event", ev.ID, "err", err)
		return nil
	}
	r.cancelRestart()
	r.cancelProbe()
	if old.ContainerID != "" {
		if err := r.removeContainer(ctx, old, old.ContainerID); err != nil {
			if unavailable(err) {
				return &parkedError{op: o, err: err}
			}
			return err
		}
	}
	_, err := r.modify(func(t *task.Task) error {
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
	return r.launch(ctx, o.seq)
}

// launch starts a container for a Scheduled task. The task ends Running, or, when the start
// fails, Failed or back in Scheduled waiting to restart, as its policy says; a task with a stop
// accepted is not started, and the stop ends it. When the runtime does not answer, the task
// waits in Scheduled and the launch is parked: a runtime that is away fails no task. seq is the
// stored order the launch completes, if any.
//
// A launch may be tried again after a crash or a lost answer: the runtime then carries on with
// the container the start already made (it is named for the start), in whatever state it is.
// One that has run and ended is recorded as started, then its exit as it was.
func (r *runner) launch(ctx context.Context, seq uint64) error {
	w := r.w
	// A launch that waited for a start slot runs again from here, holding the slot it was
	// handed: every return before the runtime's Start gives it back.
	t, ok := w.store.Get(r.id)
	if !ok || t.State != task.Scheduled {
		r.giveSlot(ctx)
		return nil
	}
	// Every start comes here: the first, a restart, one after recovery, a replayed one. Each
	// is checked against the host access the worker allows now, which may be less than when
	// the task was accepted.
	if err := w.cfg.Policy.Check(t); err != nil {
		r.giveSlot(ctx)
		return r.refuseOrTakeUp(ctx, t, seq, err)
	}
	switch r.takeSlot(ctx, seq) {
	case slotWait:
		// No slot free: the launch waits its turn in the backlog, without a goroutine; or the
		// worker shuts down, and the task stays Scheduled (its order stored, if any) and starts
		// when the worker runs again.
		return errWaitingForSlot
	case slotStopping:
		// Deleted before it could start: the stop, queued behind, ends it without a container.
		r.log.Info("start skipped: a stop of the task is accepted")
		return nil
	}
	sctx, cancel := bounded(ctx, w.cfg.StartTimeout)
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
				r.progress(step, at)
			}()
			return
		}
		r.progress(step, at)
	})
	created.Wait()
	cancel()
	r.giveSlot(ctx)

	if err != nil && unavailable(err) {
		if _, merr := r.modify(func(t *task.Task) error {
			t.Pull = nil
			t.Error = "waiting for the container runtime: " + err.Error()
			return nil
		}); merr != nil {
			r.log.Error("store that the start waits for the runtime", "err", merr)
		}
		return &parkedError{op: op{kind: opLaunch, taskID: r.id, seq: seq}, err: err}
	}
	if task.ErrorCode(err) == task.EFORBIDDEN {
		// The runtime found, pinning a bind source, that it now leads out of the allowed paths.
		return r.refuseOrTakeUp(ctx, t, seq, err)
	}
	if err != nil {
		// An earlier attempt of this start may have started its container before the worker
		// died, and this attempt failed before it got to it (a bind source changed since, say):
		// that container is the task's, not a failure.
		if c, found, ferr := r.startedBefore(ctx, t); ferr == nil && found && (c.Running || !c.StartedAt.IsZero()) {
			return r.takeUpStarted(ctx, c)
		}
		r.log.Warn("task failed to start", "err", err)
		_, merr := r.modify(func(t *task.Task) error {
			t.Pull = nil
			t.FinishTime = w.now()
			return r.ended(t, task.Outcome{StartFailed: true}, err.Error())
		})
		return merr
	}
	if err := r.markRunning(ctx, c); err != nil {
		// The container runs but the task cannot say so; remove it rather than lose track of it.
		if rerr := r.removeContainer(ctx, t, c.ID); rerr != nil {
			r.log.Error("remove the container of a start that could not be recorded", "container", task.ShortID(c.ID), "err", rerr)
		}
		return err
	}
	if !c.Running {
		r.log.Info("the container of this start ran and ended before the worker could follow it", "container", task.ShortID(c.ID))
		return r.check(ctx, c.ID, "start-up", nil)
	}
	return nil
}

// refuseOrTakeUp handles a start the worker's policy does not allow (why says which field and
// flag). An earlier attempt of the same start that the Engine carried out before the worker died
// made a container that is the task's: it is taken up as it is (a running one is left to run,
// reported), never disowned. A container that attempt made and never started is removed: it
// never ran, and will not. Otherwise the task is refused.
func (r *runner) refuseOrTakeUp(ctx context.Context, t task.Task, seq uint64, why error) error {
	c, found, err := r.startedBefore(ctx, t)
	switch {
	case err != nil && unavailable(err):
		return &parkedError{op: op{kind: opLaunch, taskID: t.ID, seq: seq}, err: err}
	case err != nil:
		return fmt.Errorf("look for a container of this start before refusing it: %w", err)
	case found && (c.Running || !c.StartedAt.IsZero()):
		return r.takeUpStarted(ctx, c)
	case found:
		if err := r.removeContainer(ctx, t, c.ID); err != nil {
			return err
		}
	}
	return r.refuse(why)
}

// startedBefore returns the container an earlier attempt of t's current start made (its event
// and restart), if the runtime has one, in its current state.
func (r *runner) startedBefore(ctx context.Context, t task.Task) (task.Container, bool, error) {
	if t.LastEvent == "" {
		return task.Container{}, false, nil
	}
	lctx, cancel := bounded(ctx, 30*time.Second)
	list, err := r.w.rt.ListTask(lctx, t.ID)
	cancel()
	if err != nil {
		return task.Container{}, false, err
	}
	for _, c := range list {
		if c.TaskID != t.ID || c.EventID != t.LastEvent || (c.SpecRead && c.SpecRestartCount != t.RestartCount) {
			continue
		}
		ictx, cancel := bounded(ctx, 30*time.Second)
		info, err := r.w.rt.Inspect(ictx, c.ID)
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
func (r *runner) takeUpStarted(ctx context.Context, c task.Container) error {
	r.log.Info("an earlier attempt of this start started its container; it is taken up", "container", task.ShortID(c.ID))
	if err := r.markRunning(ctx, c); err != nil {
		return err
	}
	if !c.Running {
		return r.check(ctx, c.ID, "start-up", nil)
	}
	return nil
}

// refuse ends a Scheduled task that the worker's policy does not let start (err says which
// field, and which flag would allow it): it ends Failed, and is not restarted.
func (r *runner) refuse(err error) error {
	r.log.Warn("task not started: the host access it asks for is not allowed", "err", err)
	r.cancelRestart()
	r.cancelProbe()
	_, merr := r.modify(func(t *task.Task) error {
		if err := transition(t, task.Failed); err != nil {
			return err
		}
		now := r.w.now()
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
func (r *runner) noteRevoked(t task.Task) {
	err := r.w.cfg.Policy.Check(t)
	if err == nil {
		return
	}
	r.log.Warn("task's container runs with host access this worker no longer allows; it is left to run, and will not be started again", "err", err)
	r.note(task.RecordNotRestarting, "the container keeps running, but the task will not be started again: %v", err)
}

// markRunning records that the task runs in container c, and starts its health check.
func (r *runner) markRunning(ctx context.Context, c task.Container) error {
	t, err := r.modify(func(t *task.Task) error {
		if err := transition(t, task.Running); err != nil {
			return err
		}
		t.ContainerID = c.ID
		t.HostPorts = c.HostPorts
		t.StartTime = c.StartedAt
		if t.StartTime.IsZero() {
			t.StartTime = r.w.now()
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
		t.AddRecord(t.StartTime, task.RecordStarted, "container %s", task.ShortID(c.ID))
		return nil
	})
	if err != nil {
		return err
	}
	r.watchHealth(ctx, t, c)
	r.log.Info("task running", "container", task.ShortID(c.ID), "image", t.Image, "restarts", t.RestartCount)
	r.noteRevoked(t) // a container made before the worker restarted with less allowed
	return nil
}

// adoptInspections bounds the inspections of containers being taken up at start-up under way
// at once.
const adoptInspections = 8

// adopt takes up a task's container found at start-up, without restarting it: a running
// container keeps running and gets its health check back; one that ended meanwhile is checked
// like any exit.
func (r *runner) adopt(ctx context.Context, containerID string) error {
	t, _ := r.w.store.Get(r.id)
	if t.ContainerID != containerID || t.State != task.Running {
		return nil
	}
	// A worker restarting onto a thousand containers takes them all up at once, each in its
	// runner: adoptInspections at a time ask the Engine, not one connection and one decoded
	// answer per container at the same moment (~16 MB at 1,000, and as many requests to the
	// Engine).
	// While the Engine is thought down, the adoption waits for it at once, parked like any
	// operation, rather than behind the inspections that found it down (30 s each when it hangs).
	select {
	case r.w.adopting <- struct{}{}:
	case <-ctx.Done():
		return nil // shutting down: the next start takes the container up
	}
	if err := r.w.down(); err != nil {
		<-r.w.adopting
		return &parkedError{op: op{kind: opAdopt, taskID: r.id, containerID: containerID}, err: err}
	}
	ictx, cancel := bounded(ctx, 30*time.Second)
	c, err := r.w.rt.Inspect(ictx, containerID)
	cancel()
	<-r.w.adopting
	if unavailable(err) {
		return &parkedError{op: op{kind: opAdopt, taskID: r.id, containerID: containerID}, err: err}
	}
	if err != nil || !c.Running {
		return r.check(ctx, containerID, "start-up", nil)
	}
	t, err = r.modify(func(t *task.Task) error {
		t.HostPorts = c.HostPorts
		if c.Health != "" && !hasOwnCheck(*t) {
			t.HealthStatus = c.Health
		}
		if c.Paused != t.Paused {
			t.Paused = c.Paused
			if c.Paused {
				t.AddRecord(r.w.now(), task.RecordPaused, "container %s found paused at start-up; health checks suspended", task.ShortID(c.ID))
			} else {
				t.AddRecord(r.w.now(), task.RecordUnpaused, "container %s found unpaused at start-up", task.ShortID(c.ID))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.watchHealth(ctx, t, c)
	r.log.Info("took up running container", "container", task.ShortID(c.ID), "restarts", t.RestartCount)
	r.noteRevoked(t)
	return nil
}

// progress records a start step the runtime reports at the time at, and pull progress while
// it pulls.
func (r *runner) progress(step task.StartStep, at time.Time) {
	// Started is recorded with the change to Running (markRunning), so that the record and the
	// state it reports come together; a step with nothing to record writes nothing, which on a
	// durable store would cost a sync.
	record := step.Type != "" && step.Type != task.RecordStarted
	if step.Pull != nil || record {
		if _, err := r.modify(func(t *task.Task) error {
			if step.Pull != nil {
				p := *step.Pull
				t.Pull = &p
			}
			if record {
				t.AddRecord(at, step.Type, "%s", step.Message)
			}
			return nil
		}); err != nil {
			r.log.Error("store a start step", "step", step.Type, "err", err)
		}
	}
	if step.Pull != nil {
		r.log.Info("pulling image", "layers", step.Pull.Layers, "layers_done", step.Pull.LayersDone,
			"bytes", step.Pull.Bytes, "bytes_total", step.Pull.BytesTotal)
	} else if step.Type != "" {
		r.log.Debug("start step", "step", step.Type, "detail", step.Message)
	}
}

// restartDue starts a task again when its back-off ends, unless something else (a stop, a
// restart event) has happened to it since.
func (r *runner) restartDue(ctx context.Context, gen int) error {
	r.w.mu.Lock()
	due := gen == r.gen && r.restart != nil
	if due {
		r.restart = nil
	}
	r.w.mu.Unlock()
	if !due {
		return nil
	}
	return r.restartNow(ctx)
}

// restartNow starts a Scheduled task again in a new container, removing the old one. When the
// container of the task's current start already exists (a restart interrupted by a crash of
// the worker), launch carries on with it instead.
func (r *runner) restartNow(ctx context.Context) error {
	t, _ := r.w.store.Get(r.id)
	if t.State != task.Scheduled || r.isStopping() {
		return nil
	}
	if t.ContainerID != "" {
		if err := r.removeContainer(ctx, t, t.ContainerID); err != nil {
			if unavailable(err) {
				return &parkedError{op: op{kind: opRestartNow, taskID: r.id}, err: err}
			}
			// Do not let an old container hold the task back: it becomes an orphan, and the
			// reaper removes it.
			r.log.Warn("cannot remove the old container; restarting anyway", "container", task.ShortID(t.ContainerID), "err", err)
		}
		if _, err := r.modify(func(t *task.Task) error {
			t.ContainerID = ""
			t.HostPorts = nil
			t.HealthStatus = ""
			t.LastHealthCheck = nil
			return nil
		}); err != nil {
			return err
		}
	}
	r.log.Info("restarting task", "restart_count", t.RestartCount, "streak", t.RestartStreak)
	return r.launch(ctx, 0)
}
