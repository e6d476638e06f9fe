package worker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// Health check defaults, as Docker's HEALTHCHECK has them but for a shorter timeout.
const (
	defaultHealthInterval = 10 * time.Second
	defaultHealthTimeout  = 2 * time.Second
	defaultHealthRetries  = 3
)

// probe is a health check resolved against one container.
type probe struct {
	kind        string
	addr        string // http, tcp: host:port
	path        string // http
	command     []string
	interval    time.Duration
	timeout     time.Duration
	retries     int
	startPeriod time.Duration
}

// hasOwnCheck reports whether the worker checks the task's health itself (rather than relying on
// an image's HEALTHCHECK, which the runtime runs).
func hasOwnCheck(t task.Task) bool { return t.Health != nil || t.HealthCheck != "" }

// probeFor resolves the task's health check against its container c, and reports whether there
// is one. HTTP and TCP checks go to the container's address, or to its published port on the
// loopback when it has none.
func probeFor(t task.Task, c task.Container) (probe, bool) {
	var h task.HealthSpec
	switch {
	case t.Health != nil:
		h = *t.Health
	case t.HealthCheck != "":
		h = task.HealthSpec{Type: task.HealthHTTP, Path: t.HealthCheck}
	default:
		return probe{}, false
	}
	p := probe{
		kind:        h.Type,
		path:        h.Path,
		command:     h.Command,
		interval:    h.Interval.D(),
		timeout:     h.Timeout.D(),
		retries:     h.Retries,
		startPeriod: h.StartPeriod.D(),
	}
	if p.kind == "" {
		p.kind = task.HealthHTTP
	}
	if p.path == "" {
		p.path = "/"
	}
	if p.interval <= 0 {
		p.interval = defaultHealthInterval
	}
	if p.timeout <= 0 {
		p.timeout = defaultHealthTimeout
	}
	if p.retries <= 0 {
		p.retries = defaultHealthRetries
	}
	if p.kind != task.HealthExec {
		port := strconv.Itoa(h.Port)
		key := port + "/tcp"
		if h.Port == 0 {
			ports := t.Ports()
			if len(ports) == 0 {
				return probe{}, false
			}
			key = ports[0]
			port, _, _ = strings.Cut(key, "/")
		}
		switch {
		case c.IPAddress != "":
			p.addr = net.JoinHostPort(c.IPAddress, port)
		case len(c.HostPorts[key]) > 0:
			p.addr = net.JoinHostPort("127.0.0.1", c.HostPorts[key][0].HostPort)
		default:
			return probe{}, false
		}
	}
	return p, true
}

// runProbe checks the container's health every interval until ctx is done, and sends each
// result to the task's runner with the status it implies: starting until the first success,
// healthy, or unhealthy after retries failures in a row (failures in the start period after the
// start do not count while the task is still starting). It runs on its own goroutine, which its runner starts and stops (watchHealth, cancelProbe),
// and touches nothing of the runner's but its ID and logger.
func (r *runner) runProbe(ctx context.Context, containerID string, p probe) {
	w, log := r.w, r.log
	defer w.wg.Done()
	started := w.now()
	status, fails := task.HealthStarting, 0
	wait := min(p.interval, time.Second)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		healthy, output, ran := w.checkOnce(ctx, containerID, p)
		if ctx.Err() != nil {
			return
		}
		if !ran {
			// The check could not be carried out: nothing is known, so nothing counts, and the
			// task keeps the status it had.
			log.Debug("health check could not be carried out", "why", output)
			timer.Reset(p.interval)
			continue
		}
		switch {
		case healthy:
			fails, status = 0, task.HealthHealthy
		case status == task.HealthStarting && w.now().Sub(started) < p.startPeriod:
			// grace after start: not counted
		default:
			fails++
			if fails >= p.retries {
				status = task.HealthUnhealthy
			}
		}
		res := &task.HealthResult{Time: w.now(), Healthy: healthy, Output: output, FailingStreak: fails}
		if !healthy {
			log.Debug("health check failed", "output", output, "failing_streak", fails)
		}
		w.enqueue(op{kind: opHealth, taskID: r.id, containerID: containerID, health: status, result: res})
		timer.Reset(p.interval)
	}
}

// probeClient makes the HTTP checks. Keep-alives are off: checks are seconds apart, and an idle
// connection per task would outlive its container.
var probeClient = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// checkOnce runs one check and returns whether it passed and what it saw, and whether it could be
// carried out at all. Only a check that ran counts: an exec the runtime did not carry out (it did
// not answer, or the container is gone, paused or stopped), and any check that fails while the
// runtime is known not to answer (the container's state is unknown then), report ran false.
func (w *Worker) checkOnce(ctx context.Context, containerID string, p probe) (healthy bool, output string, ran bool) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	healthy, output, ran = w.checkKind(ctx, containerID, p)
	if ran && !healthy {
		if note := w.unconfirmed(); note != "" {
			return false, output + " (" + note + ")", false
		}
	}
	return healthy, output, ran
}

func (w *Worker) checkKind(ctx context.Context, containerID string, p probe) (bool, string, bool) {
	switch p.kind {
	case task.HealthTCP:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return false, err.Error(), true
		}
		conn.Close()
		return true, "connected to " + p.addr, true
	case task.HealthExec:
		code, out, err := w.rt.Exec(ctx, containerID, p.command)
		switch task.ErrorCode(err) {
		case "":
		case task.EUNAVAILABLE, task.ENOTFOUND, task.ECONFLICT:
			return false, err.Error(), false
		default:
			return false, err.Error(), true
		}
		out = strings.TrimSpace(out)
		if len(out) > 512 {
			out = out[:512]
		}
		if code != 0 {
			return false, fmt.Sprintf("exit code %d: %s", code, out), true
		}
		return true, out, true
	default:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+p.path, nil)
		if err != nil {
			return false, err.Error(), true
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false, err.Error(), true
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 300, fmt.Sprintf("GET %s: %s", p.path, resp.Status), true
	}
}

// watchHealth starts the task's health check against container c, if it has one and is not
// paused; a check already running is stopped first.
func (r *runner) watchHealth(ctx context.Context, t task.Task, c task.Container) {
	r.cancelProbe()
	r.ip = c.IPAddress
	if t.Paused {
		return // checked again when it is unpaused
	}
	if p, ok := probeFor(t, c); ok {
		pctx, stop := context.WithCancel(ctx)
		r.stopProbe = stop
		r.w.wg.Add(1)
		go r.runProbe(pctx, c.ID, p)
	}
}

// health records a health status for the task's container, from the worker's own check
// (o.result set) or the runtime's (an image's HEALTHCHECK). A task that turns unhealthy is
// stopped and restarted as its policy says; with no restart policy it keeps running, reported
// unhealthy.
func (r *runner) health(ctx context.Context, o op) error {
	w := r.w
	t, _ := w.store.Get(r.id)
	if t.ContainerID != o.containerID || t.State != task.Running || t.Paused {
		return nil // a paused container's health is not known: a result from before the pause is stale
	}
	if o.result == nil && hasOwnCheck(t) {
		return nil // the worker's own check speaks for this task
	}
	prev := t.HealthStatus
	t, err := r.modify(func(t *task.Task) error {
		t.HealthStatus = o.health
		if o.result != nil {
			t.LastHealthCheck = o.result
		}
		switch {
		case o.health == task.HealthHealthy && prev != task.HealthHealthy:
			t.AddRecord(w.now(), task.RecordHealthy, "")
		case o.health == task.HealthUnhealthy && prev != task.HealthUnhealthy:
			msg := ""
			if o.result != nil {
				msg = o.result.Output
			}
			t.AddRecord(w.now(), task.RecordUnhealthy, "%s", msg)
		}
		return nil
	})
	if err != nil || o.health != task.HealthUnhealthy || prev == task.HealthUnhealthy {
		return err
	}
	if t.RestartPolicy == "" || t.RestartPolicy == task.RestartNo {
		r.log.Warn("task is unhealthy; restart policy is \"no\", so it keeps running")
		return nil
	}
	why := "unhealthy"
	if o.result != nil && o.result.Output != "" {
		why = "unhealthy: " + o.result.Output
	}
	r.log.Warn("task is unhealthy; stopping it", "why", why)
	r.note(task.RecordKilling, "%s", why)
	grace := time.Duration(t.StopTimeout) * time.Second
	sctx, cancel := bounded(ctx, w.cfg.StopTimeout+grace)
	err = w.rt.Stop(sctx, o.containerID, grace)
	cancel()
	if err != nil {
		// The container runs on. Forget the verdict, so that the next one of unhealthy (from the
		// check, started afresh, or from this op when it is replayed) acts again.
		if _, merr := r.modify(func(t *task.Task) error {
			t.HealthStatus = ""
			return nil
		}); merr != nil {
			r.log.Error("forget the unhealthy verdict", "err", merr)
		}
		r.watchHealth(ctx, t, task.Container{ID: o.containerID, IPAddress: r.ip, HostPorts: t.HostPorts})
		if unavailable(err) {
			return &parkedError{op: op{kind: opHealth, taskID: r.id, containerID: o.containerID, health: o.health, result: o.result}, err: err}
		}
		return fmt.Errorf("stop unhealthy container %s: %w", task.ShortID(o.containerID), err)
	}
	r.cancelProbe()
	ictx, cancel := bounded(ctx, 30*time.Second)
	c, ierr := w.rt.Inspect(ictx, o.containerID)
	cancel()
	_, err = r.modify(func(t *task.Task) error {
		t.FinishTime = w.now()
		if ierr == nil {
			t.ExitCode = c.ExitCode
			if !c.FinishedAt.IsZero() {
				t.FinishTime = c.FinishedAt
			}
		}
		t.AddRecord(t.FinishTime, task.RecordKilled, "exit code %d", t.ExitCode)
		return r.ended(t, task.Outcome{Unhealthy: true, ExitCode: t.ExitCode}, why)
	})
	return err
}
