package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// Logs returns the container's output as text: stdout and stderr demultiplexed and merged as
// lines in the order the Engine sends them, as opts says. The Engine must start answering within
// CallTimeout. Without opts.Follow the output must then keep coming (it ends, at the latest, when
// the Engine has sent it all): a pause of the Engine's of CallTimeout ends it with an EUNAVAILABLE
// error. Time the caller takes to read what came does not count. With
// opts.Follow it is bounded by ctx alone, and ends when the container ends. Closing the reader
// releases the Engine's stream.
func (r *Runtime) Logs(ctx context.Context, containerID string, opts task.LogOptions) (io.ReadCloser, error) {
	lopts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: opts.Follow, Timestamps: opts.Timestamps, Tail: "all"}
	switch {
	case opts.Tail < 0:
		lopts.Tail = "0"
	case opts.Tail > 0:
		lopts.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lopts.Since = fmt.Sprintf("%d.%09d", opts.Since.Unix(), opts.Since.Nanosecond())
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watchdog{timeout: r.opts.CallTimeout}
	w.start(cancel)
	body, err := r.cli.ContainerLogs(ctx, containerID, lopts)
	if err == nil && opts.Follow && !w.stop() {
		body.Close() // the Engine answered just too late
		err = context.DeadlineExceeded
	}
	if err != nil {
		w.stop()
		cancel()
		if w.fired() {
			return nil, task.Errorf(task.EUNAVAILABLE, "container logs: the Engine did not answer within %s", r.opts.CallTimeout)
		}
		return nil, convert(err, "container logs")
	}
	pr, pw := io.Pipe()
	ls := &logStream{PipeReader: pr, body: body, cancel: cancel, watchdog: w}
	go func() {
		var src io.Reader = body
		var dst io.Writer = pw
		if !opts.Follow {
			// Only the Engine's silence counts: while the reader is slow to take what came, the
			// watchdog waits.
			src, dst = w.reader(body), w.writer(pw)
		}
		_, err := stdcopy.StdCopy(dst, dst, src)
		w.stop()
		if err != nil && w.fired() {
			err = task.Errorf(task.EUNAVAILABLE, "container logs: the Engine sent nothing for %s", r.opts.CallTimeout)
		}
		pw.CloseWithError(err) // nil: io.EOF for the reader
	}()
	return ls, nil
}

// logStream is the demultiplexed output of one logs call.
type logStream struct {
	*io.PipeReader
	body     io.ReadCloser
	cancel   context.CancelFunc
	watchdog *watchdog
	once     sync.Once
}

// Close ends the Engine's stream and the goroutine that copies it.
func (s *logStream) Close() error {
	s.once.Do(func() {
		s.watchdog.stop()
		s.cancel()
		s.body.Close()
		s.PipeReader.Close()
	})
	return nil
}

// watchdog cancels a call when it goes quiet for timeout: no answer, or no data.
type watchdog struct {
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	gone    bool // fired
	done    bool // stopped: no more rearming
}

func (w *watchdog) start(cancel context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(w.timeout, func() {
		w.mu.Lock()
		w.gone = true
		w.mu.Unlock()
		cancel()
	})
}

// stop disarms the watchdog and reports whether it had not fired.
func (w *watchdog) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.timer.Stop()
	return !w.gone
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gone
}

// reader returns r with the watchdog rearmed by every read that brings data.
func (w *watchdog) reader(r io.Reader) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		if n > 0 {
			w.mu.Lock()
			if !w.gone && !w.done {
				w.timer.Reset(w.timeout)
			}
			w.mu.Unlock()
		}
		return n, err
	})
}

// writer returns dst with the watchdog paused during every write: a write waits for the reader
// of the logs, not for the Engine.
func (w *watchdog) writer(dst io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		w.mu.Lock()
		if !w.gone {
			w.timer.Stop()
		}
		w.mu.Unlock()
		n, err := dst.Write(p)
		w.mu.Lock()
		if !w.gone && !w.done {
			w.timer.Reset(w.timeout)
		}
		w.mu.Unlock()
		return n, err
	})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// secondSampleAfter is how long Stats waits for a second sample when the Engine's answer holds
// only one.
const secondSampleAfter = 500 * time.Millisecond

// Stats returns one sample of the container's resource use, computed as docker stats computes
// it, or an ENOTFOUND error when the container is gone.
//
// CPU use needs two readings of the container's CPU time. Engine 20.10 (API 1.41) answers a
// one-shot request with an empty "precpu_stats", and a request with stream=false after about a
// second, with the previous reading in "precpu_stats"; Stats asks for the latter, and when the
// answer still lacks the previous reading (a container that just started) it takes a second,
// one-shot sample half a second later and compares the two.
func (r *Runtime) Stats(ctx context.Context, containerID string) (task.ContainerStats, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	s, err := r.statsSample(ctx, containerID, false)
	if err != nil {
		return task.ContainerStats{}, err
	}
	if s.PreCPUStats.SystemUsage == 0 {
		select {
		case <-ctx.Done():
			return task.ContainerStats{}, convert(ctx.Err(), "container stats")
		case <-time.After(secondSampleAfter):
		}
		next, err := r.statsSample(ctx, containerID, true)
		if err != nil {
			return task.ContainerStats{}, err
		}
		next.PreCPUStats = s.CPUStats
		s = next
	}
	out := statsOf(s)
	out.ContainerID = containerID
	return out, nil
}

// statsSample reads one answer of the Engine's stats endpoint.
func (r *Runtime) statsSample(ctx context.Context, containerID string, oneShot bool) (container.StatsResponse, error) {
	var (
		resp container.StatsResponseReader
		err  error
	)
	if oneShot {
		resp, err = r.cli.ContainerStatsOneShot(ctx, containerID)
	} else {
		resp, err = r.cli.ContainerStats(ctx, containerID, false)
	}
	if err != nil {
		return container.StatsResponse{}, convert(err, "container stats")
	}
	defer resp.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&s); err != nil {
		return container.StatsResponse{}, convert(err, "read container stats")
	}
	return s, nil
}

// statsOf computes a sample from the Engine's stats, as the docker CLI does: CPU from the change
// between precpu_stats and cpu_stats, memory without the page cache ("cache" on cgroup v1,
// "inactive_file" on v2), network and block I/O summed over interfaces and devices.
func statsOf(s container.StatsResponse) task.ContainerStats {
	out := task.ContainerStats{
		Time:        s.Read,
		MemoryLimit: clampInt64(s.MemoryStats.Limit),
		PIDs:        clampInt64(s.PidsStats.Current),
	}
	cpu, pre := s.CPUStats, s.PreCPUStats
	if cpu.CPUUsage.TotalUsage > pre.CPUUsage.TotalUsage && cpu.SystemUsage > pre.SystemUsage && pre.SystemUsage > 0 {
		cpus := float64(cpu.OnlineCPUs)
		if cpus == 0 {
			cpus = float64(len(cpu.CPUUsage.PercpuUsage))
		}
		if cpus == 0 {
			cpus = 1
		}
		cpuDelta := float64(cpu.CPUUsage.TotalUsage - pre.CPUUsage.TotalUsage)
		sysDelta := float64(cpu.SystemUsage - pre.SystemUsage)
		out.CPUPercent = cpuDelta / sysDelta * cpus * 100
	}
	usage := s.MemoryStats.Usage
	cache, ok := s.MemoryStats.Stats["cache"] // cgroup v1
	if !ok {
		cache = s.MemoryStats.Stats["inactive_file"] // cgroup v2
	}
	if cache < usage {
		usage -= cache
	} else {
		usage = 0
	}
	out.MemoryUsage = clampInt64(usage)
	for _, n := range s.Networks {
		out.NetworkRx += clampInt64(n.RxBytes)
		out.NetworkTx += clampInt64(n.TxBytes)
	}
	for _, e := range s.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			out.BlockRead += clampInt64(e.Value)
		case "write":
			out.BlockWrite += clampInt64(e.Value)
		}
	}
	return out
}

func clampInt64(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}
