package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// How a run ends: the runtime reports a container that died, was killed for lack of memory or
// was removed (check, from a Docker event, a reconcile or start-up), and the restart policy
// decides what follows (ended).

// check finds out what became of the task's container containerID and records it: an exit, or
// the container's disappearance. It ignores containers that are no longer the task's. died is
// the die event that prompted it, if one did.
func (r *runner) check(ctx context.Context, containerID, reason string, died *task.ContainerEvent) error {
	w := r.w
	t, _ := w.store.Get(r.id)
	if containerID == "" || t.ContainerID != containerID {
		return nil
	}
	if reason == string(task.ContainerOOM) {
		// The Engine's OOM event and its OOMKilled flag race each other; either one is the truth.
		if t.State != task.Running {
			return r.lateOOM(containerID)
		}
		r.oom = containerID // until the exit is recorded
	}
	if t.State != task.Running {
		if reason != string(task.ContainerDestroyed) {
			return nil
		}
		// The container of an ended task, kept for its logs, was removed outside cube.
		_, err := r.modify(func(t *task.Task) error {
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
		ictx, cancel := bounded(ctx, 30*time.Second)
		c, err = w.rt.Inspect(ictx, containerID)
		cancel()
	}
	switch {
	case task.ErrorCode(err) == task.ENOTFOUND:
		r.log.Warn("task's container removed outside cube", "container", task.ShortID(containerID))
		_, err := r.modify(func(t *task.Task) error {
			t.ContainerID = ""
			t.FinishTime = w.now()
			t.AddRecord(t.FinishTime, task.RecordExited, "container removed outside cube")
			return r.ended(t, task.Outcome{Vanished: true}, "container removed outside cube")
		})
		return err
	case err != nil:
		// The runtime did not answer: the task's state is unknown, not failed. The next reconcile
		// asks again.
		return fmt.Errorf("inspect container %s after %s: %w", task.ShortID(containerID), reason, err)
	case c.Running:
		return nil
	}
	c.OOMKilled = c.OOMKilled || r.oom == containerID
	r.oom = ""
	_, err = r.modify(func(t *task.Task) error {
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
		return r.ended(t, task.Outcome{ExitCode: c.ExitCode, OOMKilled: c.OOMKilled}, why)
	})
	if err == nil {
		r.log.Info("task's container exited", "exit_code", c.ExitCode, "oom", c.OOMKilled)
	}
	return err
}

// ended records that the task's run ended with o (reason says how) and applies the restart
// policy: the task goes back to Scheduled with a back-off timer, or ends Completed or Failed. A
// task with a stop accepted and not yet applied ends Completed. It changes t, which the caller
// stores (it runs inside modify).
func (r *runner) ended(t *task.Task, o task.Outcome, reason string) error {
	r.cancelProbe()
	spec := task.RestartSpec{}
	if t.Restart != nil {
		spec = *t.Restart
	}
	spec = spec.WithDefaults()
	if !o.StartFailed && !t.StartTime.IsZero() && t.FinishTime.Sub(t.StartTime) >= spec.ResetAfter.D() {
		t.RestartStreak = 0 // a long, good run: the back-off starts over
	}
	now := r.w.now()
	if r.isStopping() {
		// The run ended before a stop accepted while it ran was applied: the stop decides, and a
		// stopped task ends Completed, never to restart. Its records keep how the run ended.
		if err := transition(t, task.Completed); err != nil {
			return err
		}
		t.Error = ""
		t.AddRecord(now, task.RecordStopped, "stopped by request; the run had already ended (%s)", reason)
		return nil
	}
	d := task.NextRestart(t.RestartPolicy, spec, o, t.RestartStreak, r.w.cfg.Rand())
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
		r.armRestart(d.Delay)
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

// lateOOM corrects an exit recorded before the runtime's OOM event arrived: the reason becomes
// OOMKilled. The restart decision already made stands (an OOM kill is a failure either way).
func (r *runner) lateOOM(containerID string) error {
	_, err := r.modify(func(t *task.Task) error {
		if t.ContainerID != containerID || strings.HasPrefix(t.Error, "OOMKilled") {
			return nil
		}
		was := exitReason(task.Container{ExitCode: t.ExitCode})
		if !strings.HasPrefix(t.Error, was) {
			return nil // the run ended for another reason (a stop, a health check)
		}
		t.Error = "OOMKilled" + strings.TrimPrefix(t.Error, was)
		t.AddRecord(r.w.now(), task.RecordOOMKilled, "exit code %d", t.ExitCode)
		r.log.Info("the runtime reports the container was killed for lack of memory", "container", task.ShortID(containerID))
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
