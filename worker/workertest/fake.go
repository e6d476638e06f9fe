// Package workertest provides a fake worker.Runtime for fast tests of the layers above the
// runtime: the worker loop and the HTTP API. It keeps containers in memory and emits the same
// container events a real Engine would, when a test makes a container exit or vanish. Start runs
// a worker for one test and waits until it is ready. The tests above the worker start theirs with
// package testworker (below this one), which runs a worker on this fake or any runtime, serves
// it, and makes a client of it; workertest cannot, as worker's own tests import it.
package workertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Runtime is an in-memory worker.Runtime. The zero value is not usable; call New.
type Runtime struct {
	mu         sync.Mutex
	containers map[string]*task.Container
	starts     []task.Task // every task Start was called with, in order
	stops      []string    // every container Stop was called with, in order
	watchers   map[int]chan task.ContainerEvent
	history    []task.ContainerEvent // the last events, for a Watch from a time before now
	nextWatch  int
	nextPort   int
	output     map[string][]logLine // each container's output, oldest first
	changed    chan struct{}        // closed and replaced when output grows or a container ends

	// StartHook, when set, runs at the start of every Start; an error it returns fails the start.
	// It may block, to hold a start under way.
	StartHook func(ctx context.Context, t task.Task) error
	// PingErr, when set, is what Ping returns. Set it with SetPingErr once a worker runs.
	PingErr error
	// InspectErr, when set, is what Inspect returns. Set it with SetInspectErr once a worker runs.
	InspectErr error
	// InspectHook, when set, runs at the start of every Inspect, outside the fake's lock; an
	// error it returns is Inspect's. It may block, to hold an inspection under way.
	InspectHook func(ctx context.Context, containerID string) error
	// StopErr and RemoveErr, when set, are what Stop and Remove return (doing nothing).
	StopErr, RemoveErr error
	// ExecHook, when set, answers Exec; without it Exec fails.
	ExecHook func(ctx context.Context, containerID string, cmd []string) (int, string, error)
	// LogsBreak, when set, ends every output Logs returns without Follow, after what was printed,
	// with this error instead of the end: a runtime whose stream broke.
	LogsBreak error
	// StatsSample, when its Time is set, is what Stats returns (with the container's ID);
	// otherwise Stats returns DefaultStats.
	StatsSample task.ContainerStats
}

// DefaultStats returns the sample Stats returns unless Runtime.StatsSample is set, without its
// Time and ContainerID.
func DefaultStats() task.ContainerStats {
	return task.ContainerStats{
		CPUPercent: 12.5, MemoryUsage: 8 << 20, MemoryLimit: 64 << 20, NetworkRx: 1024, NetworkTx: 512,
		BlockRead: 4096, BlockWrite: 8192, PIDs: 3,
	}
}

// logLine is one line a container printed.
type logLine struct {
	time time.Time
	text string
}

// New returns an empty fake runtime.
func New() *Runtime {
	return &Runtime{
		containers: make(map[string]*task.Container),
		watchers:   make(map[int]chan task.ContainerEvent),
		nextPort:   40000,
		output:     make(map[string][]logLine),
		changed:    make(chan struct{}),
	}
}

// Start records t and "runs" a container for it, publishing each of its ports on a made-up host
// port (or the one bound in PortBindings). It reports the Created and Started steps to progress.
// Like the Docker adapter, it makes at most one container per start (t's LastEvent and
// RestartCount): a start tried again returns that start's container as it is, starting it
// first when it was made and never started (see Create).
func (r *Runtime) Start(ctx context.Context, t task.Task, progress func(task.StartStep)) (task.Container, error) {
	r.mu.Lock()
	r.starts = append(r.starts, t.Clone())
	hook := r.StartHook
	r.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, t); err != nil {
			return task.Container{}, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.LastEvent != "" {
		for _, c := range r.containers {
			if c.TaskID == t.ID && c.EventID == t.LastEvent && c.SpecRead && c.SpecRestartCount == t.RestartCount {
				if !c.Running && c.StartedAt.IsZero() {
					c.Running, c.StartedAt = true, time.Now()
				}
				return *c, nil
			}
		}
	}
	c := r.newContainer(t)
	c.Running, c.StartedAt = true, time.Now()
	if progress != nil {
		progress(task.StartStep{Type: task.RecordCreated, Message: "container " + c.ID[:8]})
		progress(task.StartStep{Type: task.RecordStarted, Message: "container " + c.ID[:8]})
	}
	return *c, nil
}

// Create makes a container for t's start without starting it: what a worker that died in the
// middle of a start leaves behind.
func (r *Runtime) Create(t task.Task) task.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.newContainer(t)
}

// Add adds c as it is (with a new ID when it has none), as if made outside the worker, and
// returns it.
func (r *Runtime) Add(c task.Container) task.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	if c.Created.IsZero() {
		c.Created = time.Now()
	}
	if c.Spec != nil {
		c.SpecRead, c.SpecRestartCount = true, c.Spec.RestartCount
	}
	r.containers[c.ID] = &c
	return c
}

// newContainer makes a container for t, not started. The caller holds r.mu.
func (r *Runtime) newContainer(t task.Task) *task.Container {
	spec := t.Redacted()
	c := &task.Container{ID: uuid.NewString(), TaskID: t.ID, Created: time.Now(), EventID: t.LastEvent, Spec: &spec,
		SpecRead: true, SpecRestartCount: spec.RestartCount}
	for _, p := range t.Ports() {
		host := t.PortBindings[p]
		if host == "" {
			r.nextPort++
			host = strconv.Itoa(r.nextPort)
		}
		if c.HostPorts == nil {
			c.HostPorts = task.PortMap{}
		}
		c.HostPorts[p] = []task.PortBinding{{HostIP: "0.0.0.0", HostPort: host}}
	}
	r.containers[c.ID] = c
	return c
}

// SetErrs sets StopErr and RemoveErr while the runtime is in use.
func (r *Runtime) SetErrs(stop, remove error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.StopErr, r.RemoveErr = stop, remove
}

// Stop stops the container, as its process would on SIGTERM (exit code 0), and emits the die
// event; an unknown or stopped one is success.
func (r *Runtime) Stop(ctx context.Context, containerID string, grace time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.StopErr != nil {
		return r.StopErr
	}
	r.stops = append(r.stops, containerID)
	if c, ok := r.containers[containerID]; ok && c.Running {
		c.Running, c.ExitCode, c.FinishedAt = false, 0, time.Now()
		r.emit(task.ContainerEvent{Kind: task.ContainerDied, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
		r.wake()
	}
	return nil
}

// Remove deletes the container and emits the destroy event; an unknown one is success.
func (r *Runtime) Remove(ctx context.Context, containerID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.RemoveErr != nil {
		return r.RemoveErr
	}
	if c, ok := r.containers[containerID]; ok {
		delete(r.containers, containerID)
		delete(r.output, containerID)
		r.wake()
		if c.Running {
			r.emit(task.ContainerEvent{Kind: task.ContainerDied, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now(), ExitCode: 137})
		}
		r.emit(task.ContainerEvent{Kind: task.ContainerDestroyed, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
	}
	return nil
}

// Exec answers with ExecHook.
func (r *Runtime) Exec(ctx context.Context, containerID string, cmd []string) (int, string, error) {
	r.mu.Lock()
	hook := r.ExecHook
	r.mu.Unlock()
	if hook == nil {
		return 0, "", errors.New("exec is not supported by this fake")
	}
	return hook(ctx, containerID, cmd)
}

// Containers returns copies of every container, running or not.
func (r *Runtime) Containers() []task.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]task.Container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, *c)
	}
	return out
}

// Inspect returns the container, or ENOTFOUND.
func (r *Runtime) Inspect(ctx context.Context, containerID string) (task.Container, error) {
	if r.InspectHook != nil {
		if err := r.InspectHook(ctx, containerID); err != nil {
			return task.Container{}, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.InspectErr != nil {
		return task.Container{}, r.InspectErr
	}
	c, ok := r.containers[containerID]
	if !ok {
		return task.Container{}, task.Errorf(task.ENOTFOUND, "no such container: %s", containerID)
	}
	return *c, nil
}

// List returns every container, without its Spec, as the Docker adapter's List does (Inspect
// has it).
func (r *Runtime) List(ctx context.Context) ([]task.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]task.Container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, *c)
		out[len(out)-1].Spec = nil
	}
	return out, nil
}

// ListTask returns List's containers of task id.
func (r *Runtime) ListTask(ctx context.Context, id uuid.UUID) ([]task.Container, error) {
	all, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(c task.Container) bool { return c.TaskID != id }), nil
}

// Watch delivers the events the test causes until ctx is done: first those after since (when
// it is not zero) that it still keeps, as the Engine's event stream does, then the new ones.
func (r *Runtime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	ch := make(chan task.ContainerEvent, 256)
	r.mu.Lock()
	id := r.nextWatch
	r.nextWatch++
	r.watchers[id] = ch
	var missed []task.ContainerEvent
	if !since.IsZero() {
		for _, ev := range r.history {
			if ev.Time.After(since) {
				missed = append(missed, ev)
			}
		}
	}
	r.mu.Unlock()
	for _, ev := range missed {
		if ctx.Err() != nil {
			break
		}
		fn(ev)
	}
	defer func() {
		r.mu.Lock()
		delete(r.watchers, id)
		r.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-ch:
			fn(ev)
		}
	}
}

// SetPingErr sets PingErr, safely while a worker pings.
func (r *Runtime) SetPingErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.PingErr = err
}

// SetInspectErr sets InspectErr, safely while a worker inspects.
func (r *Runtime) SetInspectErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.InspectErr = err
}

// Ping returns PingErr.
func (r *Runtime) Ping(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.PingErr
}

// Exit makes a running container exit with code, as its process would, and emits the die event.
func (r *Runtime) Exit(containerID string, code int, oom bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[containerID]
	if !ok || !c.Running {
		return fmt.Errorf("container %s is not running", containerID)
	}
	c.Running, c.ExitCode, c.OOMKilled, c.FinishedAt = false, code, oom, time.Now()
	r.wake()
	if oom {
		r.emit(task.ContainerEvent{Kind: task.ContainerOOM, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
	}
	r.emit(task.ContainerEvent{Kind: task.ContainerDied, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now(), ExitCode: code})
	return nil
}

// OOM emits the runtime's oom event for a container, as the Engine does when the kernel kills it
// for lack of memory; the Engine may send it before or after the die event.
func (r *Runtime) OOM(containerID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[containerID]
	if !ok {
		return fmt.Errorf("no container %s", containerID)
	}
	r.emit(task.ContainerEvent{Kind: task.ContainerOOM, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
	return nil
}

// Health reports a health status for a running container, as the Engine does for an image's
// HEALTHCHECK.
func (r *Runtime) Health(containerID, status string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[containerID]
	if !ok || !c.Running {
		return fmt.Errorf("container %s is not running", containerID)
	}
	c.Health = status
	r.emit(task.ContainerEvent{Kind: task.ContainerHealth, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now(), Health: status})
	return nil
}

// SetPaused pauses (or unpauses) a running container, as docker pause does, and emits the event.
func (r *Runtime) SetPaused(containerID string, paused bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[containerID]
	if !ok || !c.Running {
		return fmt.Errorf("container %s is not running", containerID)
	}
	c.Paused = paused
	kind := task.ContainerUnpaused
	if paused {
		kind = task.ContainerPaused
	}
	r.emit(task.ContainerEvent{Kind: kind, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
	return nil
}

// Starts returns copies of the tasks Start was called with, in order.
func (r *Runtime) Starts() []task.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]task.Task, len(r.starts))
	for i, t := range r.starts {
		out[i] = t.Clone()
	}
	return out
}

// Stops returns the container IDs Stop was called with, in order.
func (r *Runtime) Stops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.stops...)
}

// Running returns the IDs of the containers that run now.
func (r *Runtime) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, c := range r.containers {
		if c.Running {
			out = append(out, id)
		}
	}
	return out
}

// historySize is how many events the runtime keeps for a Watch from a time before now.
const historySize = 1024

// emit sends ev to every watcher, and keeps it for later ones. Callers hold r.mu.
func (r *Runtime) emit(ev task.ContainerEvent) {
	r.history = append(r.history, ev)
	if len(r.history) > historySize {
		r.history = slices.Delete(r.history, 0, len(r.history)-historySize)
	}
	for _, ch := range r.watchers {
		select {
		case ch <- ev:
		default: // a watcher that does not keep up loses events, as with a broken stream
		}
	}
}

// wake tells followed logs that output grew or a container ended. Callers hold r.mu.
func (r *Runtime) wake() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Print appends lines to the output of the container, as if it printed them now; each is one
// line, without its newline. It fails for an unknown container.
func (r *Runtime) Print(containerID string, lines ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.containers[containerID]; !ok {
		return fmt.Errorf("no such container: %s", containerID)
	}
	for _, l := range lines {
		r.output[containerID] = append(r.output[containerID], logLine{time: time.Now(), text: l})
	}
	r.wake()
	return nil
}

// Logs returns what the container printed, as opts says: the lines since opts.Since, the last
// opts.Tail of them, with their times when asked, and with opts.Follow the lines printed later,
// until the container ends or ctx is done. It fails with ENOTFOUND for an unknown container.
func (r *Runtime) Logs(ctx context.Context, containerID string, opts task.LogOptions) (io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[containerID]
	if !ok {
		return nil, task.Errorf(task.ENOTFOUND, "no such container: %s", containerID)
	}
	lines := r.output[containerID]
	var earlier []logLine
	for _, l := range lines {
		if opts.Since.IsZero() || !l.time.Before(opts.Since) {
			earlier = append(earlier, l)
		}
	}
	switch {
	case opts.Tail < 0:
		earlier = nil
	case opts.Tail > 0 && len(earlier) > opts.Tail:
		earlier = earlier[len(earlier)-opts.Tail:]
	}
	var b strings.Builder
	for _, l := range earlier {
		writeLine(&b, l, opts.Timestamps)
	}
	if !opts.Follow || !c.Running {
		if r.LogsBreak != nil {
			return io.NopCloser(io.MultiReader(strings.NewReader(b.String()), errReader{r.LogsBreak})), nil
		}
		return io.NopCloser(strings.NewReader(b.String())), nil
	}
	pr, pw := io.Pipe()
	f := &followed{PipeReader: pr, done: make(chan struct{})}
	next, changed := len(lines), r.changed
	go func() {
		if _, err := io.WriteString(pw, b.String()); err != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case <-f.done:
				return
			case <-changed:
			}
			r.mu.Lock()
			lines := r.output[containerID]
			c, ok := r.containers[containerID]
			running := ok && c.Running
			changed = r.changed
			r.mu.Unlock()
			var b strings.Builder
			for _, l := range lines[min(next, len(lines)):] {
				writeLine(&b, l, opts.Timestamps)
			}
			next = len(lines)
			if _, err := io.WriteString(pw, b.String()); err != nil {
				return
			}
			if !running {
				pw.Close()
				return
			}
		}
	}()
	return f, nil
}

// followed is followed output; closing it ends the goroutine that feeds it.
type followed struct {
	*io.PipeReader
	once sync.Once
	done chan struct{}
}

func (f *followed) Close() error {
	f.once.Do(func() { close(f.done) })
	return f.PipeReader.Close()
}

func writeLine(b *strings.Builder, l logLine, timestamps bool) {
	if timestamps {
		b.WriteString(l.time.UTC().Format(time.RFC3339Nano))
		b.WriteByte(' ')
	}
	b.WriteString(l.text)
	b.WriteByte('\n')
}

// Stats returns StatsSample, or DefaultStats when StatsSample has no Time, for the container,
// or an ENOTFOUND error for an unknown one.
func (r *Runtime) Stats(ctx context.Context, containerID string) (task.ContainerStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.containers[containerID]; !ok {
		return task.ContainerStats{}, task.Errorf(task.ENOTFOUND, "no such container: %s", containerID)
	}
	s := r.StatsSample
	if s.Time.IsZero() {
		s = DefaultStats()
		s.Time = time.Now()
	}
	s.ContainerID = containerID
	return s, nil
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
