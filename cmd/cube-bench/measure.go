package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/docker/docker/api/types/events"
)

// settle is the pause before each timed operation, so that the Engine's work left over from the
// previous one (a container's network setup, a removal's cleanup) is not counted against the
// next one.
const settle = 50 * time.Millisecond

// missingImage is an image no registry serves: the worker's pull of it is refused at once, so a
// task that asks for it fails fast but stays tracked.
const missingImage = "127.0.0.1:1/cube-bench-missing:latest"

func (b *bench) echoSpec(name string, cmd ...string) taskSpec {
	return taskSpec{Name: name, Image: b.opts.image, ExposedPorts: map[string]struct{}{"7777/tcp": {}}, Cmd: cmd}
}

// rssWindow is how long snapshot watches the worker's resident set: a Go process's RSS moves
// with its garbage collector and the return of freed memory, so one reading is a matter of luck.
const rssWindow = 5 * time.Second

// snapshot records the worker's memory: the median and the largest resident set over rssWindow,
// and the peak since the worker started.
func (b *bench) snapshot(ctx context.Context, when string, tasks int) error {
	var samples []procMem
	for end := time.Now().Add(rssWindow); ; {
		m, err := procStatus(b.worker.pid())
		if err != nil {
			return err
		}
		samples = append(samples, m)
		if time.Now().After(end) {
			break
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	last := samples[len(samples)-1]
	slices.SortFunc(samples, func(a, b procMem) int { return cmp.Compare(a.RSS, b.RSS) })
	med := samples[(len(samples)-1)/2]
	b.res.Memory = append(b.res.Memory, Mem{When: when, Tasks: tasks, RSSMiB: mib(med.RSS),
		MaxMiB: mib(samples[len(samples)-1].RSS), HWMMiB: mib(last.HWM), AnonMiB: mib(med.Anon), FileMiB: mib(med.File)})
	return nil
}

func mib(n int64) float64 { return float64(n*100>>20) / 100 }

// idleRSSPhase reads the worker's memory a moment after it became ready, before any task.
func (b *bench) idleRSSPhase(ctx context.Context) error {
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	return b.snapshot(ctx, "idle", 0)
}

// startStopPhase measures starts and stops one at a time, interleaving cube, the raw SDK's
// create+start, and the raw SDK doing also the inspects cube's adapter does, in rotating order.
// Each stop ends at the Engine's destroy event for the container.
func (b *bench) startStopPhase(ctx context.Context) error {
	o := b.opts
	var cubeStart, rawStart, rawFull, cubeStop, rawStop []time.Duration
	// Each start split at the Engine's start event for the container: before it, the Engine's
	// create and start; after it, what the caller does until it knows (inspect, store, poll).
	split := map[string][]time.Duration{}
	splitAt := func(kind, id string, t0, t1 time.Time) error {
		at, err := b.events.wait(ctx, id, events.ActionStart, 10*time.Second)
		if err != nil {
			return err
		}
		split[kind+": call→start event"] = append(split[kind+": call→start event"], at.Sub(t0))
		split[kind+": start event→known"] = append(split[kind+": start event→known"], t1.Sub(at))
		return nil
	}
	defer func() {
		if len(cubeStart) > 0 {
			r := &StartResult{Compare: compare(cubeStart, rawStart), RawFull: distOf(rawFull), Split: map[string]Dist{}}
			r.RatioRawFull = ratio(r.Cube.P50, r.RawFull.P50)
			for k, v := range split {
				r.Split[k] = distOf(v)
			}
			b.res.Start = r
		}
		if len(cubeStop) > 0 {
			c := compare(cubeStop, rawStop)
			b.res.Stop = &c
		}
	}()
	spec := b.echoSpec("bench-start", "--listen", ":7777")
	for i := range o.starts {
		var cubeTask taskView
		var rawID, fullID string
		for k := range 3 {
			if err := sleepCtx(ctx, settle); err != nil {
				return err
			}
			switch (i + k) % 3 {
			case 0:
				t0 := time.Now()
				id, err := b.worker.submit(ctx, spec)
				if err != nil {
					return err
				}
				t, seen, err := b.worker.waitState(ctx, id, stateRunning, b.gate(id, events.ActionStart), o.poll, time.Minute)
				if err != nil {
					return err
				}
				cubeStart = append(cubeStart, seen.Sub(t0))
				cubeTask = t
				if err := splitAt("cube", t.ContainerID, t0, seen); err != nil {
					return err
				}
			case 1:
				t0 := time.Now()
				id, err := b.docker.createStart(ctx, false)
				if err != nil {
					return fmt.Errorf("raw create+start: %w", err)
				}
				t1 := time.Now()
				rawStart = append(rawStart, t1.Sub(t0))
				rawID = id
				if err := splitAt("raw", id, t0, t1); err != nil {
					return err
				}
			case 2:
				t0 := time.Now()
				id, err := b.docker.createStart(ctx, true)
				if err != nil {
					return fmt.Errorf("raw inspect+create+start+inspect: %w", err)
				}
				t1 := time.Now()
				rawFull = append(rawFull, t1.Sub(t0))
				fullID = id
				if err := splitAt("raw full", id, t0, t1); err != nil {
					return err
				}
			}
		}

		stopCube := func() error {
			t0 := time.Now()
			if err := b.worker.delete(ctx, cubeTask.ID); err != nil {
				return err
			}
			at, err := b.events.wait(ctx, cubeTask.ContainerID, events.ActionDestroy, time.Minute)
			if err != nil {
				return err
			}
			cubeStop = append(cubeStop, at.Sub(t0))
			return b.confirmGone(ctx, cubeTask.ContainerID)
		}
		stopRaw := func() error {
			t0 := time.Now()
			if err := b.docker.stopRemove(ctx, rawID); err != nil {
				return fmt.Errorf("raw stop+remove: %w", err)
			}
			at, err := b.events.wait(ctx, rawID, events.ActionDestroy, time.Minute)
			if err != nil {
				return err
			}
			rawStop = append(rawStop, at.Sub(t0))
			return nil
		}
		stops := []func() error{stopCube, stopRaw}
		if i%2 == 1 {
			slices.Reverse(stops)
		}
		for _, stop := range stops {
			if err := sleepCtx(ctx, settle); err != nil {
				return err
			}
			if err := stop(); err != nil {
				return err
			}
		}
		if err := b.docker.remove(ctx, fullID); err != nil {
			return err
		}
	}
	return nil
}

func compare(cube, raw []time.Duration) Compare {
	c := Compare{Cube: distOf(cube), Raw: distOf(raw)}
	c.Ratio = ratio(c.Cube.P50, c.Raw.P50)
	n := min(len(cube), len(raw))
	if n == 0 {
		return c
	}
	diffs := make([]time.Duration, n)
	ratios := make([]float64, n)
	for i := range n {
		diffs[i] = cube[i] - raw[i]
		ratios[i] = float64(cube[i]) / float64(raw[i])
	}
	slices.Sort(diffs)
	slices.Sort(ratios)
	// The lower median, as distOf's nearest rank.
	c.PairedDiff = ms(diffs[(n-1)/2])
	c.PairedRatio = math.Round(ratios[(n-1)/2]*1000) / 1000
	return c
}

// confirmGone checks that the Engine no longer knows the container, asking for up to 5 s.
func (b *bench) confirmGone(ctx context.Context, id string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		gone, err := b.docker.gone(ctx, id)
		if err != nil {
			return err
		}
		if gone {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %.12s still exists after its destroy event", id)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// exitPhase measures, one task at a time, how long after the Engine's die event for a task's
// container GET /tasks/{id} first shows the task Completed.
func (b *bench) exitPhase(ctx context.Context) error {
	o := b.opts
	var lat []time.Duration
	var ids []string
	defer func() {
		if len(lat) > 0 {
			d := distOf(lat)
			b.res.Exit = &d
		}
	}()
	spec := taskSpec{Name: "bench-exit", Image: o.image, Cmd: []string{"--sleep", "300ms", "--exit", "0"}}
	for range o.exits {
		if err := sleepCtx(ctx, settle); err != nil {
			return err
		}
		id, err := b.worker.submit(ctx, spec)
		if err != nil {
			return err
		}
		ids = append(ids, id)
		t, seen, err := b.worker.waitState(ctx, id, stateCompleted, b.gate(id, events.ActionDie), o.poll, time.Minute)
		if err != nil {
			return err
		}
		died, err := b.events.wait(ctx, t.ContainerID, events.ActionDie, 10*time.Second)
		if err != nil {
			return err
		}
		lat = append(lat, seen.Sub(died))
	}
	return b.deleteTasks(ctx, ids)
}

// deleteTasks deletes the tasks through the API, concurrently, and waits until each one's
// container is destroyed.
func (b *bench) deleteTasks(ctx context.Context, ids []string) error {
	return eachLimited(ids, 16, func(id string) error {
		t, err := b.worker.get(ctx, id)
		if err != nil {
			return err
		}
		if err := b.worker.delete(ctx, id); err != nil {
			return err
		}
		if t.ContainerID == "" {
			return nil
		}
		if t.State == stateRunning {
			_, err = b.events.wait(ctx, t.ContainerID, events.ActionDestroy, 2*time.Minute)
			return err
		}
		// A DELETE of a task that has ended removes the container it kept for its logs; should
		// it not within 3 s, remove it here, so that the next phase starts from a clean Engine.
		if _, err := b.events.wait(ctx, t.ContainerID, events.ActionDestroy, 3*time.Second); err == nil {
			return nil
		}
		return b.docker.remove(ctx, t.ContainerID)
	})
}

// submitAll posts one task per spec, n at once when parallel is n, and returns their IDs in the
// order given.
func (b *bench) submitAll(ctx context.Context, n, parallel int, spec taskSpec, gate <-chan struct{}) ([]string, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if gate != nil {
				<-gate
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			ids[i], errs[i] = b.worker.submit(ctx, spec)
		})
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// gate returns what waitState waits for before it polls tightly: the Engine's event for one of
// the task's containers. With -naive-poll it is nil: tight polling from the start.
func (b *bench) gate(taskID string, action events.Action) <-chan struct{} {
	if b.opts.naivePoll {
		return nil
	}
	return b.events.seen(taskKey(taskID), action)
}

// waitAll waits until every task is Running, polling one task at a time (the first that is not
// yet there) every interval, and returns when the last one was seen there.
func (b *bench) waitAll(ctx context.Context, ids []string, interval, timeout time.Duration) (time.Time, []taskView, error) {
	var last time.Time
	views := make([]taskView, len(ids))
	for i, id := range ids {
		t, seen, err := b.worker.waitState(ctx, id, stateRunning, b.gate(id, events.ActionStart), interval, timeout)
		if err != nil {
			return last, views, err
		}
		views[i], last = t, seen
	}
	return last, views, nil
}

// burstPhase measures bursts: n tasks posted at once until all are Running, next to the raw SDK
// creating and starting n containers with the worker's concurrency, alternating which goes first.
func (b *bench) burstPhase(ctx context.Context) error {
	res, err := b.bursts(ctx, b.opts.burst, b.opts.concurrency, b.opts.burstRounds)
	if res != nil {
		b.res.Burst = res
	}
	return err
}

// bursts measures rounds bursts of n tasks on b.worker, whose --concurrency is concurrency, each
// next to the raw SDK doing n create+starts with at most concurrency under way. It returns what
// it measured, also when a round failed (nil when none came through).
func (b *bench) bursts(ctx context.Context, n, concurrency, rounds int) (res *BurstResult, err error) {
	var cubeWall, rawWall []time.Duration
	defer func() {
		if len(cubeWall) > 0 && len(rawWall) > 0 {
			c := compare(cubeWall, rawWall)
			res = &BurstResult{Tasks: n, Rounds: len(cubeWall), Concurrency: concurrency,
				CubeWall: c.Cube, RawWall: c.Raw, Ratio: c.Ratio, PairedDiff: c.PairedDiff, PairedRatio: c.PairedRatio}
		}
	}()
	cube := func() error {
		gate := make(chan struct{})
		var t0 time.Time
		var ids []string
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			ids, err = b.submitAll(ctx, n, n, b.echoSpec("bench-burst", "--listen", ":7777"), gate)
		}()
		time.Sleep(20 * time.Millisecond) // let every poster reach the gate
		t0 = time.Now()
		close(gate)
		<-done
		if err != nil {
			return err
		}
		last, _, err := b.waitAll(ctx, ids, b.opts.poll, 10*time.Minute)
		if err != nil {
			return err
		}
		cubeWall = append(cubeWall, last.Sub(t0))
		return b.deleteTasks(ctx, ids)
	}
	raw := func() error {
		ids := make([]string, n)
		errs := make([]error, n)
		sem := make(chan struct{}, concurrency)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range n {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ids[i], errs[i] = b.docker.createStart(ctx, false)
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		rawWall = append(rawWall, wall)
		return b.docker.removeAll(ctx, ids)
	}
	for r := range rounds {
		order := []func() error{cube, raw}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, f := range order {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return nil, err
			}
			if err := f(); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// idleCPUPhase starts tasks that keep running, leaves the worker alone for the idle window, and
// measures the CPU time it used meanwhile.
func (b *bench) idleCPUPhase(ctx context.Context) error {
	o := b.opts
	ids, err := b.submitAll(ctx, o.running, 8, b.echoSpec("bench-idle", "--listen", ":7777"), nil)
	if err != nil {
		return err
	}
	if _, _, err := b.waitAll(ctx, ids, 10*time.Millisecond, 5*time.Minute); err != nil {
		return err
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return err
	}
	all, err := b.worker.list(ctx)
	if err != nil {
		return err
	}
	if err := b.snapshot(ctx, fmt.Sprintf("%d running", o.running), len(all)); err != nil {
		return err
	}
	pid := b.worker.pid()
	c0, err := procCPU(pid)
	if err != nil {
		return err
	}
	e0, execErr := procExecTime(pid)
	t0 := time.Now()
	if err := sleepCtx(ctx, o.idle); err != nil {
		return err
	}
	c1, err := procCPU(pid)
	if err != nil {
		return err
	}
	el := time.Since(t0)
	e1, err := procExecTime(pid)
	execErr = errors.Join(execErr, err)
	percent := func(d time.Duration) float64 { return float64(int64(float64(d)/float64(el)*100*1000)) / 1000 }
	b.res.CPU = &CPUResult{
		Running:    o.running,
		Seconds:    el.Round(time.Millisecond).Seconds(),
		CPUSeconds: (c1 - c0).Seconds(),
		Percent:    percent(c1 - c0),
	}
	if execErr == nil {
		b.res.CPU.ExecSeconds = (e1 - e0).Seconds()
		b.res.CPU.ExecPercent = percent(e1 - e0)
	}
	return b.deleteTasks(ctx, ids)
}

// trackedPhase makes the worker track many tasks cheaply: tasks whose image no registry serves
// fail at once, create no container, and stay tracked. It then reads the worker's memory.
func (b *bench) trackedPhase(ctx context.Context) error {
	o := b.opts
	t0 := time.Now()
	spec := taskSpec{Name: "bench-tracked", Image: missingImage, ExposedPorts: map[string]struct{}{"7777/tcp": {}}, Cmd: []string{"--listen", ":7777"}}
	if _, err := b.submitAll(ctx, o.tracked, 16, spec, nil); err != nil {
		return err
	}
	// Wait until every task has failed its pull: none is Pending or Scheduled any more.
	var all []taskView
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var err error
		all, err = b.worker.list(ctx)
		if err != nil {
			return err
		}
		busy := 0
		for _, t := range all {
			if t.State == statePending || t.State == stateScheduled {
				busy++
			}
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d tasks still pending after 5m", busy)
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	made := time.Since(t0)
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := b.snapshot(ctx, "tracked", len(all)); err != nil {
		return err
	}

	// For reference: the worker's own GET /tasks with everything it tracks.
	var lat []time.Duration
	size := 0
	for range 30 {
		t := time.Now()
		ts, err := b.worker.list(ctx)
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
		size = len(ts)
	}
	body, err := b.worker.listBytes(ctx)
	if err != nil {
		return err
	}
	b.res.Tracked = &TrackedResult{
		Tasks:       size,
		How:         fmt.Sprintf("%d tasks asking for %s (the pull is refused at once, so each fails without a container and stays tracked; Failed), on top of the %d tasks of the earlier phases", o.tracked, missingImage, size-o.tracked),
		Seconds:     made.Round(time.Millisecond).Seconds(),
		ListLatency: distOf(lat),
		ListBytes:   body,
	}
	return nil
}
