// Package workertest provides a fake worker.Runtime for fast tests of the layers above the
// runtime: the worker loop and the HTTP API. It keeps containers in memory and emits the same
// container events a real Engine would, when a test makes a container exit or vanish.
package workertest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	nextWatch  int
	nextPort   int

	// StartHook, when set, runs at the start of every Start; an error it returns fails the start.
	// It may block, to hold a start under way.
	StartHook func(ctx context.Context, t task.Task) error
	// PingErr, when set, is what Ping returns.
	PingErr error
	// InspectErr, when set, is what Inspect returns.
	InspectErr error
	// ExecHook, when set, answers Exec; without it Exec fails.
	ExecHook func(ctx context.Context, containerID string, cmd []string) (int, string, error)
}

// New returns an empty fake runtime.
func New() *Runtime {
	return &Runtime{containers: make(map[string]*task.Container), watchers: make(map[int]chan task.ContainerEvent), nextPort: 40000}
}

// Start records t and "runs" a container for it, publishing each of its ports on a made-up host
// port (or the one bound in PortBindings). It reports the Created and Started steps to progress.
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
	c := &task.Container{ID: uuid.NewString(), TaskID: t.ID, Running: true, StartedAt: time.Now()}
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
	if progress != nil {
		progress(task.StartStep{Type: task.RecordCreated, Message: "container " + c.ID[:8]})
		progress(task.StartStep{Type: task.RecordStarted, Message: "container " + c.ID[:8]})
	}
	return *c, nil
}

// Stop stops the container, as its process would on SIGTERM (exit code 0), and emits the die
// event; an unknown or stopped one is success.
func (r *Runtime) Stop(ctx context.Context, containerID string, grace time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops = append(r.stops, containerID)
	if c, ok := r.containers[containerID]; ok && c.Running {
		c.Running, c.ExitCode, c.FinishedAt = false, 0, time.Now()
		r.emit(task.ContainerEvent{Kind: task.ContainerDied, ContainerID: containerID, TaskID: c.TaskID, Time: time.Now()})
	}
	return nil
}

// Remove deletes the container and emits the destroy event; an unknown one is success.
func (r *Runtime) Remove(ctx context.Context, containerID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.containers[containerID]; ok {
		delete(r.containers, containerID)
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

// List returns every container.
func (r *Runtime) List(ctx context.Context) ([]task.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]task.Container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, *c)
	}
	return out, nil
}

// Watch delivers the events the test causes until ctx is done.
func (r *Runtime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	ch := make(chan task.ContainerEvent, 256)
	r.mu.Lock()
	id := r.nextWatch
	r.nextWatch++
	r.watchers[id] = ch
	r.mu.Unlock()
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

// emit sends ev to every watcher. Callers hold r.mu.
func (r *Runtime) emit(ev task.ContainerEvent) {
	for _, ch := range r.watchers {
		select {
		case ch <- ev:
		default: // a watcher that does not keep up loses events, as with a broken stream
		}
	}
}
