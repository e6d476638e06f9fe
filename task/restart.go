package task

import (
	"fmt"
	"time"
)

// RestartSpec tunes how a task restarts. Zero fields take the defaults below.
type RestartSpec struct {
	MaxAttempts int      // restarts allowed in a row before the task is left Failed; 0 is unlimited
	Delay       Duration // the first back-off; it doubles with each restart in a row
	MaxDelay    Duration // the cap on the back-off
	ResetAfter  Duration // a run at least this long starts a new row: the back-off is reset
}

// Restart defaults, as the kubelet's CrashLoopBackOff has them.
const (
	DefaultRestartDelay      = time.Second
	DefaultRestartMaxDelay   = 5 * time.Minute
	DefaultRestartResetAfter = 10 * time.Minute
)

// WithDefaults returns r with every zero field set to its default.
func (r RestartSpec) WithDefaults() RestartSpec {
	if r.Delay <= 0 {
		r.Delay = Duration(DefaultRestartDelay)
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = Duration(DefaultRestartMaxDelay)
	}
	if r.MaxDelay < r.Delay {
		r.MaxDelay = r.Delay
	}
	if r.ResetAfter <= 0 {
		r.ResetAfter = Duration(DefaultRestartResetAfter)
	}
	return r
}

// Outcome is how a run of a task's container ended.
type Outcome struct {
	ExitCode    int
	OOMKilled   bool
	Unhealthy   bool // the worker ended it because its health check failed
	StartFailed bool // the container never ran (a pull or create or start failed)
	Vanished    bool // the container was removed behind the worker's back
}

// Failed reports whether the outcome counts as a failure for the on-failure policy.
func (o Outcome) Failed() bool {
	return o.ExitCode != 0 || o.OOMKilled || o.Unhealthy || o.StartFailed || o.Vanished
}

// RestartDecision is what NextRestart decided.
type RestartDecision struct {
	Restart bool
	Delay   time.Duration // how long to wait before the restart
	Reason  string        // why not, when Restart is false
}

// NextRestart decides whether a task whose container ended with o restarts, and after what
// back-off. policy is the task's RestartPolicy; streak is the number of restarts already made in
// the current row (the caller starts a new row, streak 0, after a run of at least ResetAfter);
// jitter, in [0, 1), spreads the delay over ±10% so that tasks failing together do not restart in
// lockstep. It is a pure function: same inputs, same answer.
func NextRestart(policy string, spec RestartSpec, o Outcome, streak int, jitter float64) RestartDecision {
	switch policy {
	case "", RestartNo:
		return RestartDecision{Reason: "restart policy is \"no\""}
	case RestartOnFailure:
		if !o.Failed() {
			return RestartDecision{Reason: "exited successfully and restart policy is \"on-failure\""}
		}
	case RestartAlways, RestartUnlessStopped:
	default:
		return RestartDecision{Reason: fmt.Sprintf("unknown restart policy %q", policy)}
	}
	spec = spec.WithDefaults()
	if spec.MaxAttempts > 0 && streak >= spec.MaxAttempts {
		return RestartDecision{Reason: fmt.Sprintf("restart attempts exhausted (%d)", spec.MaxAttempts)}
	}
	return RestartDecision{Restart: true, Delay: Backoff(spec, streak, jitter)}
}

// Backoff returns the delay before restart number streak+1 of a row: Delay doubled streak times,
// spread by ±10% with jitter in [0, 1), and never above MaxDelay.
func Backoff(spec RestartSpec, streak int, jitter float64) time.Duration {
	spec = spec.WithDefaults()
	d := float64(spec.Delay.D())
	limit := float64(spec.MaxDelay.D())
	for i := 0; i < streak && d < limit; i++ {
		d *= 2
	}
	// In float64 until capped, so that no product overflows a Duration.
	return time.Duration(min(d*(0.9+0.2*jitter), limit))
}
