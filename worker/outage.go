package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// pingTimeout is the least time a ping of the runtime has to answer.
const pingTimeout = 5 * time.Second

// outage is what the worker knows of whether the runtime answers. Guarded by Worker.mu.
type outage struct {
	err         error              // why the runtime is thought not to answer; nil when it does
	since       time.Time          // since when
	waiting     []*runner          // runners parked until the runtime answers
	watchCancel context.CancelFunc // ends the current event subscription
}

// park keeps o to carry out again when the runtime answers, ahead of what the backlog holds, and
// notes that the runtime does not answer (unless the worker is shutting down, which is why the
// operation stopped).
func (r *runner) park(ctx context.Context, o op, err error) {
	r.log.Warn("operation waits for the container runtime", "err", err)
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	r.backlog = append([]op{o}, r.backlog...)
	w.queued++
	if !r.parked {
		r.parked = true
		w.outage.waiting = append(w.outage.waiting, r)
	}
	if ctx.Err() == nil {
		w.markDownLocked(err)
	}
}

// markDownLocked notes that the runtime does not answer, and why. Callers hold w.mu.
func (w *Worker) markDownLocked(err error) {
	if w.outage.err == nil {
		w.outage.since = w.now()
		w.log.Warn("the container runtime does not answer; tasks keep their last known state", "reason", err)
	}
	w.outage.err = err
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

// markUp notes that the runtime answers again. Coming back from an outage, the worker wakes the
// runners that waited for it (on ctx, Run's), follows the runtime's events afresh and
// reconciles.
func (w *Worker) markUp(ctx context.Context) {
	w.mu.Lock()
	if w.outage.err == nil {
		w.mu.Unlock()
		return
	}
	w.log.Info("the container runtime answers again", "down_for", w.now().Sub(w.outage.since).Round(time.Millisecond))
	w.outage.err = nil
	for _, r := range w.outage.waiting {
		r.parked = false
		w.wakeLocked(ctx, r)
	}
	w.outage.waiting = nil
	if w.outage.watchCancel != nil {
		w.outage.watchCancel() // a stream that hung may never say so: subscribe again
	}
	w.mu.Unlock()
	w.reconcile(ctx)
}

// down returns why the runtime is thought not to answer, the outage's own error (an operation
// parked with it notes the same outage, not a new one wrapping it); nil while it answers.
func (w *Worker) down() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.outage.err
}

// unconfirmed returns the note that Get and List put on tasks while the runtime does not answer.
func (w *Worker) unconfirmed() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.outage.err == nil {
		return ""
	}
	return fmt.Sprintf("%s has not answered since %s (%s); this is the last known state",
		w.cfg.RuntimeName, w.outage.since.UTC().Format(time.RFC3339), w.outage.err)
}

// Ready returns nil when the worker has recovered its state at start and the runtime answers,
// and otherwise an EUNAVAILABLE error saying why (wrapping the runtime's error). It answers from
// what the worker last saw of the runtime, its ping every PingInterval and every call it made,
// and so costs no runtime call: a readiness probe cannot load the Engine.
func (w *Worker) Ready(ctx context.Context) error {
	w.mu.Lock()
	err := w.outage.err
	w.mu.Unlock()
	recovered := w.recovered.Load()
	switch {
	case err != nil && !recovered:
		return task.Wrap(task.EUNAVAILABLE, err, w.cfg.RuntimeName+" does not answer, so the worker cannot recover its tasks yet")
	case err != nil:
		return task.Wrap(task.EUNAVAILABLE, err, w.cfg.RuntimeName+" does not answer")
	case !recovered:
		return task.Errorf(task.EUNAVAILABLE, "the worker is still recovering its tasks from %s", w.cfg.RuntimeName)
	}
	return nil
}

// pingLoop asks the runtime whether it answers every PingInterval, so that an outage, and the
// end of one, is noticed even when nothing else calls the runtime. A ping has pingTimeout to
// answer: an Engine that is only slow, on a loaded machine, is not taken for one that is gone.
func (w *Worker) pingLoop(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, max(w.cfg.PingInterval, pingTimeout))
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
		w.markUp(ctx)
	}
}
