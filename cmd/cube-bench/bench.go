package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// bench is one run of the benchmarks.
type bench struct {
	opts           options
	stdout, stderr io.Writer
	runID          string
	workerName     string
	res            Results

	docker *dockerEnv
	events *tracker
	worker *workerProc
	// others are the workers of the scale and sweep phases, each with a name of its own that
	// starts with workerName; cleanup stops them and removes their containers.
	others []*workerProc
}

// addWorker notes a worker of a phase's own for cleanup.
func (b *bench) addWorker(w *workerProc) { b.others = append(b.others, w) }

func newBench(opts options, stdout, stderr io.Writer) *bench {
	runID := uuid.NewString()[:8]
	return &bench{
		opts:       opts,
		stdout:     stdout,
		stderr:     stderr,
		runID:      runID,
		workerName: "cube-bench-" + runID,
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "cube-bench: "+format+"\n", args...)
}

// run runs every chosen phase, then prints and writes the results. It always removes the run's
// containers and stops the worker, also when a phase fails or ctx is cancelled (Ctrl-C).
func (b *bench) run(ctx context.Context) (err error) {
	began := time.Now()
	o := b.opts
	b.res.Options = map[string]any{
		"concurrency": o.concurrency, "starts": o.starts, "burst": o.burst, "burst_rounds": o.burstRounds,
		"exits": o.exits, "running": o.running, "idle_seconds": o.idle.Seconds(), "tracked": o.tracked,
		"api_seconds": o.apiDuration.Seconds(), "api_clients": o.apiClients, "api_tasks": o.apiTasks,
		"poll_ms": float64(o.poll) / 1e6, "naive_poll": o.naivePoll, "quiet_max_seconds": o.quietMax.Seconds(),
		"image": o.image, "cube": o.cubeBin, "run_id": b.runID, "worker_name": b.workerName,
	}
	if o.runs("scale") {
		maps.Copy(b.res.Options, map[string]any{"scale_running": o.scaleRunning, "scale_tracked": o.scaleTracked, "scale_at": o.scaleAt,
			"scale_wave": o.scaleWave, "scale_exits": o.scaleExits, "scale_idle_seconds": o.scaleIdle.Seconds(),
			"scale_list_samples": o.scaleListSamples, "engine_probe": o.engineProbe})
	}
	if o.runs("sweep") {
		maps.Copy(b.res.Options, map[string]any{"sweep": o.sweep, "sweep_burst": o.sweepBurst, "sweep_rounds": o.sweepRounds})
	}

	d, err := newDockerEnv(ctx, b.runID, o.image)
	if err != nil {
		return err
	}
	b.docker = d
	defer d.close()
	if err := d.checkImage(ctx); err != nil {
		return err
	}
	b.res.Machine = machineInfo(ctx, d, o.cubeBin)

	// Cleanup runs last, whatever happened, on a context of its own: Ctrl-C cancels ctx.
	defer func() {
		if cerr := b.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	go func() {
		<-evCtx.Done()
		if ctx.Err() != nil {
			b.logf("interrupted: stopping the worker (it may finish starts under way for up to 15 s) and removing the run's containers")
		}
	}()
	b.events = d.track(evCtx, b.workerName)

	phase := func(name string, f func(context.Context) error) {
		if !o.runs(name) || ctx.Err() != nil {
			return
		}
		if name != "api" {
			b.waitQuiet(ctx, name)
		}
		t0 := time.Now()
		b.logf("%s ...", name)
		foreign := b.events.foreignEvents()
		defer func() {
			if n := b.events.foreignEvents() - foreign; n > 0 {
				if b.res.ForeignEvents == nil {
					b.res.ForeignEvents = map[string]int{}
				}
				b.res.ForeignEvents[name] = n
			}
		}()
		if err := f(ctx); err != nil {
			msg := strings.ReplaceAll(err.Error(), "\n", "; ")
			if len(msg) > 500 {
				msg = msg[:500] + " …"
			}
			b.res.Errors = append(b.res.Errors, fmt.Sprintf("%s: %s", name, msg))
			b.logf("%s failed: %v", name, err)
			return
		}
		b.logf("%s done in %.1fs", name, time.Since(t0).Seconds())
	}

	// The API load runs in this process, before the worker subprocess starts, so that it
	// disturbs nothing else.
	phase("api", b.apiPhase)
	if ctx.Err() == nil && b.needsWorker() {
		b.logf("starting %s worker --name %s (log: %s)", o.cubeBin, b.workerName, o.workerLog)
		w, err := startWorker(ctx, o.cubeBin, b.workerName, o.concurrency, o.workerLog, o.inMemory)
		if err != nil {
			b.res.Errors = append(b.res.Errors, err.Error())
		} else {
			b.worker = w
			phase("idle-rss", b.idleRSSPhase)
			phase("start", b.startStopPhase)
			phase("exit", b.exitPhase)
			phase("burst", b.burstPhase)
			phase("idle", b.idleCPUPhase)
			phase("tracked", b.trackedPhase)
		}
	}
	// These two run workers of their own, and only when -only names them.
	phase("scale", b.scalePhase)
	phase("sweep", b.sweepPhase)
	if ctx.Err() != nil {
		b.res.Errors = append(b.res.Errors, "interrupted: "+ctx.Err().Error())
	}

	b.res.Bar = b.res.bar()
	b.res.Seconds = time.Since(began).Round(time.Second).Seconds()
	b.res.printTable(b.stdout)
	if werr := b.res.writeJSON(o.out); werr != nil {
		err = errors.Join(err, fmt.Errorf("write %s: %w", o.out, werr))
	} else {
		b.logf("figures written to %s", o.out)
	}
	if len(b.res.Errors) > 0 {
		err = errors.Join(err, fmt.Errorf("%d error(s); see the end of the report", len(b.res.Errors)))
	}
	return err
}

func (b *bench) needsWorker() bool {
	for _, p := range []string{"start", "exit", "burst", "idle", "tracked"} {
		if b.opts.runs(p) {
			return true
		}
	}
	return false
}

// cleanup stops the worker subprocess, then removes every container of the run: the worker's,
// by its cube.worker label, and cube-bench's own, by the cube.bench.run label.
func (b *bench) cleanup() error {
	var errs []error
	labels := []string{labelRun + "=" + b.runID}
	seen := map[string]bool{}
	for _, w := range append([]*workerProc{b.worker}, b.others...) {
		if w == nil {
			continue
		}
		if err := w.stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop the worker %s: %w", w.name, err))
		}
		if !seen[w.name] {
			seen[w.name] = true
			labels = append(labels, labelWorker+"="+w.name)
		}
	}
	if !seen[b.workerName] {
		labels = append(labels, labelWorker+"="+b.workerName)
	}
	// A scale run leaves a thousand containers: the Engine removes a few a second.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, label := range labels {
		n, err := b.docker.removeLabelled(ctx, label)
		if err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		}
		if n > 0 {
			b.logf("removed %d containers labelled %s", n, label)
		}
	}
	return errors.Join(errs...)
}

// machineInfo describes the machine and its Docker Engine. What it cannot find out stays empty.
func machineInfo(ctx context.Context, d *dockerEnv, cubeBin string) Machine {
	m := Machine{Time: time.Now().UTC().Truncate(time.Second), CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemTotalMiB = kb >> 10
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if v, err := d.cli.ServerVersion(cctx); err == nil {
		m.DockerVersion, m.DockerAPI = v.Version, v.APIVersion
	}
	if info, err := d.cli.Info(cctx); err == nil {
		m.StorageDriver = info.Driver
	}
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Second)
	defer vcancel()
	if out, err := exec.CommandContext(vctx, cubeBin, "version").Output(); err == nil {
		m.CubeVersion = strings.TrimSpace(string(out))
	}
	return m
}

// Quiet means: no event of another user's container, and the machine's CPUs less than
// quietCPU busy, for quietFor. waitQuiet waits at most -quiet-max for it.
const (
	quietFor = 5 * time.Second
	quietCPU = 0.25
)

// waitQuiet waits until the machine is quiet before a phase, so that other users of a shared
// machine disturb the figures less, and records how long it waited and whether it got there.
func (b *bench) waitQuiet(ctx context.Context, phase string) {
	if b.opts.quietMax <= 0 {
		return
	}
	start := time.Now()
	since := start
	foreign := b.events.foreignEvents()
	prev, err := readCPUStat()
	for time.Since(start) < b.opts.quietMax {
		if sleepCtx(ctx, 250*time.Millisecond) != nil {
			return
		}
		cur, cerr := readCPUStat()
		busy := 0.0
		if err == nil && cerr == nil && cur.total > prev.total {
			busy = float64(cur.busy-prev.busy) / float64(cur.total-prev.total)
		}
		prev, err = cur, cerr
		if n := b.events.foreignEvents(); n != foreign || busy > quietCPU {
			foreign, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quietFor {
			b.res.noteQuiet(phase, time.Since(start), true)
			return
		}
	}
	b.logf("the machine stayed busy for %v (other containers or processes); measuring %s anyway", b.opts.quietMax, phase)
	b.res.noteQuiet(phase, time.Since(start), false)
}

type cpuStat struct{ busy, total uint64 }

// readCPUStat reads the machine's CPU time from /proc/stat: user, nice, system, idle, iowait,
// irq, softirq and steal (guest time is already in user and nice). Busy is all but idle and
// iowait.
func readCPUStat() (cpuStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuStat{}, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	var s cpuStat
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuStat{}, fmt.Errorf("/proc/stat: %w", err)
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s, nil
}
