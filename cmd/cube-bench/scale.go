package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// ScaleResult is the scale phase: one worker carrying many running tasks, then many tracked.
type ScaleResult struct {
	Running     int    `json:"running"`
	Tracked     int    `json:"tracked"`
	Concurrency int    `json:"concurrency"`
	Worker      string `json:"worker"`
	// StartSeconds is how long the Running tasks took to start through cube, in waves of
	// WaveSize (posted 16 at a time, all Running before the next wave).
	StartSeconds float64 `json:"start_seconds"`
	WaveSize     int     `json:"wave_size"`
	// Stages are cube's start rate between the points where the Engine's own rate was read.
	Stages []StageRate `json:"cube_start_rates"`
	// Engine is the Engine's own start rate (raw create+start, one at a time) with as many of
	// the run's containers running.
	Engine []EngineRate `json:"engine_start_rates"`
	// ListRunning and ListTracked are the worker's GET /tasks next to a bare encode of the same
	// list, served from cube-bench, at Running tasks and at Tracked.
	ListRunning *ListCompare `json:"get_tasks_running,omitempty"`
	ListTracked *ListCompare `json:"get_tasks_tracked,omitempty"`
	IdleCPU     *CPUResult   `json:"idle_cpu,omitempty"`
	// Exits is, for Exiting tasks sent SIGTERM at once (the echo exits 0 at once), the time from
	// each container's die event to the first GET /tasks/{id} that says Completed.
	Exiting int            `json:"exiting"`
	Exits   *Dist          `json:"exit_detection,omitempty"`
	Restart *RestartResult `json:"kill9,omitempty"`
	// TrackedSeconds is how long the tracked tasks took to be made (submitted and failed).
	TrackedSeconds float64 `json:"tracked_seconds,omitempty"`
	// Threads is the machine's thread limit and the threads in use before the phase;
	// ThreadsPerContainer what each of the run's containers cost, read at the full count.
	Threads             threadBudget `json:"threads"`
	ThreadsPerContainer float64      `json:"threads_per_container"`
}

// StageRate is cube's start rate over a stage: from From to To tasks Running.
type StageRate struct {
	From      int     `json:"from"`
	To        int     `json:"to"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// EngineRate is the Engine's start rate with Running of the run's containers running: Starts
// raw create+starts one after the other.
type EngineRate struct {
	Running   int     `json:"running"`
	Starts    int     `json:"starts"`
	PerSecond float64 `json:"per_second"`
	Start     Dist    `json:"start"`
}

// ListCompare is GET /tasks from the worker next to two bare net/http handlers in cube-bench
// that write the same list (decoded from the worker's answer), requests taking turns, one at a
// time: Bare encodes it with encoding/json (the baseline, which Ratio is to), BareAppend
// writes the same bytes with task.AppendJSON, as the worker does (AppendRatio: what cube costs
// beyond its encoder).
type ListCompare struct {
	Tasks             int     `json:"tasks"`
	Bytes             int     `json:"bytes"`
	Cube              Dist    `json:"cube"`
	Bare              Dist    `json:"bare"`
	Ratio             float64 `json:"ratio_p50"`
	PairedRatio       float64 `json:"paired_ratio_p50"`
	BareAppend        Dist    `json:"bare_appendjson"`
	AppendRatio       float64 `json:"ratio_p50_appendjson"`
	AppendPairedRatio float64 `json:"paired_ratio_p50_appendjson"`
}

// RestartResult is the worker killed with SIGKILL and started again on its data dir.
type RestartResult struct {
	Running      int     `json:"running_before"`
	ReadySeconds float64 `json:"ready_seconds"` // from the new process's start to /readyz 200
	TakenUp      int     `json:"taken_up"`      // Running again with the same container
	StillUp      int     `json:"still_up"`      // and so after a reconcile pass (12 s later)
	Restarted    int     `json:"restarted"`     // containers whose StartedAt changed
}

// scalePhase runs its own worker to -scale-running Running tasks, then -scale-tracked tracked.
func (b *bench) scalePhase(ctx context.Context) error {
	o := b.opts
	name := b.workerName + "-scale"
	res := &ScaleResult{Running: o.scaleRunning, Tracked: o.scaleTracked, Concurrency: o.concurrency, Worker: name,
		WaveSize: o.scaleWave, Exiting: o.scaleExits}
	b.res.Scale = res
	var err error
	if res.Threads, err = readThreadBudget(); err != nil {
		return err
	}
	keep := fmt.Sprint(o.scaleTracked + o.scaleRunning)
	w, err := startWorker(ctx, o.cubeBin, name, o.concurrency, o.workerLog+".scale", o.inMemory,
		"--keep-ended", keep, "--max-tasks", fmt.Sprint(2*(o.scaleTracked+o.scaleRunning)))
	if err != nil {
		return err
	}
	b.addWorker(w)
	main := b.worker
	b.worker = w
	defer func() {
		// Its thousand containers must not load the Engine under the phases after it (the sweep).
		if err := b.worker.stop(); err != nil {
			b.logf("scale: stop the worker: %v", err)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Minute)
		defer cancel()
		if n, err := b.docker.removeLabelled(rctx, labelWorker+"="+name); err != nil {
			b.logf("scale: remove the worker's containers: %v", err)
		} else {
			b.logf("scale: removed its %d containers", n)
		}
		b.worker = main
	}()

	// The Engine's own rate, and cube's, as containers pile up.
	points := append(slices.Clone(o.scaleAt), o.scaleRunning)
	var running []string
	t0 := time.Now()
	for _, p := range points {
		if p < len(running) || p > o.scaleRunning {
			continue
		}
		if err := b.engineRate(ctx, len(running)); err != nil {
			return err
		}
		from, s0 := len(running), time.Now()
		for len(running) < p {
			n := min(o.scaleWave, p-len(running))
			if err := res.Threads.check(len(running), o.scaleRunning-len(running)); err != nil {
				return err
			}
			ids, err := b.submitAll(ctx, n, 16, b.echoSpec("bench-scale", "--listen", ":7777"), nil)
			running = append(running, ids...)
			if err != nil {
				return err
			}
			if _, _, err := b.waitAll(ctx, ids, 20*time.Millisecond, 10*time.Minute); err != nil {
				return err
			}
			b.logf("scale: %d running (%.0f s)", len(running), time.Since(t0).Seconds())
		}
		if len(running) > from {
			el := time.Since(s0)
			res.Stages = append(res.Stages, StageRate{From: from, To: len(running), Seconds: el.Round(time.Millisecond).Seconds(),
				PerSecond: float64(len(running)-from) / el.Seconds()})
		}
	}
	res.StartSeconds = time.Since(t0).Round(time.Millisecond).Seconds()
	if n, err := threadsInUse(); err == nil && len(running) > 0 {
		res.ThreadsPerContainer = float64(n-res.Threads.Base) / float64(len(running))
	}
	if err := b.engineRate(ctx, len(running)); err != nil {
		return err
	}

	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := b.snapshot(ctx, fmt.Sprintf("scale: %d running", len(running)), len(running)); err != nil {
		return err
	}
	if res.ListRunning, err = b.compareList(ctx, o.scaleListSamples); err != nil {
		return err
	}
	if res.IdleCPU, err = b.idleCPU(ctx, len(running), o.scaleIdle); err != nil {
		return err
	}

	// Some exit at once.
	exiting := running[:min(o.scaleExits, len(running))]
	if res.Exits, err = b.exitAtOnce(ctx, exiting); err != nil {
		return err
	}
	running = running[len(exiting):]

	// kill -9, and start again on the same data dir.
	if res.Restart, err = b.kill9Restart(ctx, running); err != nil {
		return err
	}

	// Many more tracked, most ended: tasks whose image is missing and may not be pulled (pull
	// policy never) fail at once without a container, through the same start path as any (a
	// start slot, the policy check, the image's inspection, the Failed record). A pull refused by
	// a closed port fails the same way but costs the Engine ~350 ms each, four at a time: 13
	// minutes for 9,000.
	all, err := b.worker.list(ctx)
	if err != nil {
		return err
	}
	if more := o.scaleTracked - len(all); more > 0 {
		t1 := time.Now()
		spec := taskSpec{Name: "bench-tracked", Image: missingImage, ExposedPorts: map[string]struct{}{"7777/tcp": {}}, Cmd: []string{"--listen", ":7777"},
			PullPolicy: "never"}
		for done := 0; done < more; {
			n := min(1000, more-done)
			if _, err := b.submitAll(ctx, n, 16, spec, nil); err != nil {
				return err
			}
			done += n
			b.logf("scale: %d tracked (%.0f s)", len(all)+done, time.Since(t1).Seconds())
		}
		if all, err = b.waitSettled(ctx, 30*time.Minute); err != nil {
			return err
		}
		res.TrackedSeconds = time.Since(t1).Round(time.Millisecond).Seconds()
	}
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := b.snapshot(ctx, fmt.Sprintf("scale: %d tracked", len(all)), len(all)); err != nil {
		return err
	}
	if res.ListTracked, err = b.compareList(ctx, max(10, o.scaleListSamples/2)); err != nil {
		return err
	}
	// The figure above comes 5 s after a burst of thousands of tasks, whose garbage the runtime
	// gives back to the system only over a minute or so; the goal is judged on it. What tracking
	// them costs once the worker has been left alone is read too, beside it.
	if err := sleepCtx(ctx, trackedSettle); err != nil {
		return err
	}
	return b.snapshot(ctx, fmt.Sprintf("scale: %d tracked, idle %v after", len(all), trackedSettle), len(all))
}

// trackedSettle is how long the worker is left alone before its memory with the tracked tasks
// is read the second time.
const trackedSettle = 60 * time.Second

// engineRate measures the Engine's own start rate now: o.engineProbe raw create+starts one
// after the other, removed after.
func (b *bench) engineRate(ctx context.Context, running int) error {
	n := b.opts.engineProbe
	var lat []time.Duration
	var ids []string
	t0 := time.Now()
	for range n {
		s := time.Now()
		id, err := b.docker.createStart(ctx, false)
		if id != "" {
			ids = append(ids, id)
		}
		if err != nil {
			return errors.Join(err, b.docker.removeAll(ctx, ids))
		}
		lat = append(lat, time.Since(s))
	}
	el := time.Since(t0)
	b.res.Scale.Engine = append(b.res.Scale.Engine, EngineRate{Running: running, Starts: n, PerSecond: float64(n) / el.Seconds(), Start: distOf(lat)})
	b.logf("scale: the Engine starts %.2f containers/s with %d running (p50 %.0f ms)", float64(n)/el.Seconds(), running, distOf(lat).P50)
	return b.docker.removeAll(ctx, ids)
}

// compareList times the worker's GET /tasks next to the two bare handlers writing the same
// list, taking turns (the order rotating from round to round), samples of each.
func (b *bench) compareList(ctx context.Context, samples int) (*ListCompare, error) {
	var raw json.RawMessage
	if err := b.worker.do(ctx, http.MethodGet, "/tasks", nil, http.StatusOK, &raw); err != nil {
		return nil, err
	}
	var list []task.Task
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("decode GET /tasks: %w", err)
	}
	bareURL, shutdown, err := serve(bareHandler(list))
	if err != nil {
		return nil, err
	}
	defer shutdown()
	appendURL, shutdownAppend, err := serve(bareAppendHandler(list))
	if err != nil {
		return nil, err
	}
	defer shutdownAppend()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: requestTimeout}
	defer hc.CloseIdleConnections()
	get := func(u string, body *bytes.Buffer) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/tasks", nil)
		if err != nil {
			return 0, err
		}
		t := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		w := io.Discard
		if body != nil {
			w = body
		}
		_, err = io.Copy(w, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s/tasks: %s", u, resp.Status)
		}
		return time.Since(t), err
	}
	// The two bare handlers must write the same bytes, or the second baseline measures something
	// else.
	var viaJSON, viaAppend bytes.Buffer
	if _, err := get(bareURL, &viaJSON); err != nil {
		return nil, err
	}
	if _, err := get(appendURL, &viaAppend); err != nil {
		return nil, err
	}
	if !bytes.Equal(viaJSON.Bytes(), viaAppend.Bytes()) {
		return nil, fmt.Errorf("GET /tasks: the bare task.AppendJSON handler wrote %d bytes that differ from encoding/json's %d", viaAppend.Len(), viaJSON.Len())
	}
	times := map[string][]time.Duration{}
	for i := range samples + 2 { // the first of each warms the connection up
		all := []string{b.worker.url, bareURL, appendURL}
		turn := append(all[i%3:], all[:i%3]...)
		for _, u := range turn {
			d, err := get(u, nil)
			if err != nil {
				return nil, err
			}
			if i >= 2 {
				times[u] = append(times[u], d)
			}
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	c := compare(times[b.worker.url], times[bareURL])
	a := compare(times[b.worker.url], times[appendURL])
	return &ListCompare{Tasks: len(list), Bytes: len(raw), Cube: c.Cube, Bare: c.Raw, Ratio: c.Ratio, PairedRatio: c.PairedRatio,
		BareAppend: a.Raw, AppendRatio: a.Ratio, AppendPairedRatio: a.PairedRatio}, nil
}

// idleCPU measures the worker's CPU time over d, in which cube-bench sends it nothing.
func (b *bench) idleCPU(ctx context.Context, running int, d time.Duration) (*CPUResult, error) {
	pid := b.worker.pid()
	c0, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	e0, execErr := procExecTime(pid)
	t0 := time.Now()
	if err := sleepCtx(ctx, d); err != nil {
		return nil, err
	}
	c1, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	el := time.Since(t0)
	e1, err := procExecTime(pid)
	execErr = errors.Join(execErr, err)
	percent := func(d time.Duration) float64 { return float64(int64(float64(d)/float64(el)*100*1000)) / 1000 }
	r := &CPUResult{Running: running, Seconds: el.Round(time.Millisecond).Seconds(), CPUSeconds: (c1 - c0).Seconds(), Percent: percent(c1 - c0)}
	if execErr == nil {
		r.ExecSeconds, r.ExecPercent = (e1 - e0).Seconds(), percent(e1-e0)
	}
	return r, nil
}

// exitAtOnce sends SIGTERM to the containers of the tasks at once (the echo exits 0) and returns,
// per task, the time from its die event to the first GET /tasks/{id} that says Completed.
func (b *bench) exitAtOnce(ctx context.Context, ids []string) (*Dist, error) {
	views := make([]taskView, len(ids))
	for i, id := range ids {
		t, err := b.worker.get(ctx, id)
		if err != nil {
			return nil, err
		}
		views[i] = t
	}
	lat := make([]time.Duration, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			t, seen, err := b.worker.waitState(ctx, id, stateCompleted, b.events.seen(taskKey(id), events.ActionDie), b.opts.poll, 2*time.Minute)
			if err != nil {
				errs[i] = err
				return
			}
			died, err := b.events.wait(ctx, t.ContainerID, events.ActionDie, 10*time.Second)
			lat[i], errs[i] = seen.Sub(died), err
		})
	}
	time.Sleep(100 * time.Millisecond) // every poller is waiting for its die event
	kill := make([]error, len(ids))
	var kwg sync.WaitGroup
	for i, v := range views {
		kwg.Go(func() {
			kctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			kill[i] = b.docker.cli.ContainerKill(kctx, v.ContainerID, "SIGTERM")
		})
	}
	kwg.Wait()
	wg.Wait()
	if err := errors.Join(append(kill, errs...)...); err != nil {
		return nil, err
	}
	d := distOf(lat)
	return &d, nil
}

// kill9Restart kills the worker with SIGKILL while the tasks run, starts it again on its data
// dir, and checks that each task is Running with the same container, not restarted.
func (b *bench) kill9Restart(ctx context.Context, ids []string) (*RestartResult, error) {
	before := map[string]string{} // task → container
	for _, t := range mustList(ctx, b) {
		if t.State == stateRunning {
			before[t.ID] = t.ContainerID
		}
	}
	started, err := b.startedAt(ctx, before)
	if err != nil {
		return nil, err
	}
	old := b.worker
	old.kill9()
	t0 := time.Now()
	nw, err := old.restart(ctx)
	if err != nil {
		return nil, err
	}
	ready := time.Since(t0)
	b.addWorker(nw)
	b.worker = nw
	r := &RestartResult{Running: len(before), ReadySeconds: ready.Round(time.Millisecond).Seconds()}
	b.logf("scale: ready %.3f s after kill -9 with %d running", ready.Seconds(), len(before))
	count := func() int {
		n := 0
		for _, t := range mustList(ctx, b) {
			if c, ok := before[t.ID]; ok && t.State == stateRunning && t.ContainerID == c {
				n++
			}
		}
		return n
	}
	r.TakenUp = count()
	if err := sleepCtx(ctx, 12*time.Second); err != nil {
		return r, err
	}
	r.StillUp = count()
	after, err := b.startedAt(ctx, before)
	if err != nil {
		return r, err
	}
	for c, at := range started {
		if after[c] != at {
			r.Restarted++
		}
	}
	return r, nil
}

// mustList lists the worker's tasks; on error it returns none (the counts then show it).
func mustList(ctx context.Context, b *bench) []taskView {
	ts, err := b.worker.list(ctx)
	if err != nil {
		b.logf("scale: GET /tasks: %v", err)
	}
	return ts
}

// startedAt returns when the Engine last started each container (and how often it restarted it).
func (b *bench) startedAt(ctx context.Context, byTask map[string]string) (map[string]string, error) {
	var ids []string
	for _, c := range byTask {
		ids = append(ids, c)
	}
	var mu sync.Mutex
	out := map[string]string{}
	err := eachLimited(ids, 8, func(id string) error {
		ictx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		c, err := b.docker.cli.ContainerInspect(ictx, id)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		out[id] = fmt.Sprintf("%s/%d", c.State.StartedAt, c.RestartCount)
		if c.State.Status != container.StateRunning {
			out[id] += "/" + string(c.State.Status)
		}
		return nil
	})
	return out, err
}

// waitSettled waits until no task is Pending or Scheduled and returns them all.
func (b *bench) waitSettled(ctx context.Context, timeout time.Duration) ([]taskView, error) {
	deadline := time.Now().Add(timeout)
	for {
		all, err := b.worker.list(ctx)
		if err != nil {
			return nil, err
		}
		busy := 0
		for _, t := range all {
			if t.State == statePending || t.State == stateScheduled {
				busy++
			}
		}
		if busy == 0 {
			return all, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d tasks still pending after %v", busy, timeout)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// SweepPoint is one --concurrency of the sweep: bursts on a worker started with it.
type SweepPoint struct {
	Concurrency int          `json:"concurrency"`
	Burst       *BurstResult `json:"burst"`
}

// sweepPhase runs, for each -sweep concurrency, a worker of its own with that --concurrency and
// -sweep-rounds bursts of -sweep-burst next to the raw SDK at the same concurrency.
func (b *bench) sweepPhase(ctx context.Context) error {
	o := b.opts
	main := b.worker
	defer func() { b.worker = main }()
	for _, c := range o.sweep {
		name := fmt.Sprintf("%s-c%d", b.workerName, c)
		w, err := startWorker(ctx, o.cubeBin, name, c, o.workerLog+fmt.Sprintf(".c%d", c), o.inMemory)
		if err != nil {
			return err
		}
		b.addWorker(w)
		b.worker = w
		b.logf("sweep: --concurrency %d, %d bursts of %d", c, o.sweepRounds, o.sweepBurst)
		res, err := b.bursts(ctx, o.sweepBurst, c, o.sweepRounds)
		b.res.Sweep = append(b.res.Sweep, SweepPoint{Concurrency: c, Burst: res})
		if res != nil {
			b.logf("sweep: --concurrency %d: cube %.1f s, raw %.1f s, ratio %.3f", c, res.CubeWall.P50/1000, res.RawWall.P50/1000, res.Ratio)
		}
		if serr := w.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
