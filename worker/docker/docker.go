// Package docker runs cube's tasks on a Docker Engine. Its Runtime satisfies worker.Runtime:
// it pulls images when they are missing, creates and starts one labelled container per task
// start, stops and removes containers idempotently, and turns the Engine's event stream into
// task.ContainerEvents. Docker's errors become task error kinds here and nowhere else.
//
// Every call to the Engine gets a deadline, even when the caller's context has none, and every
// response body and stream is closed, so a hung Engine makes a task's state unknown but never
// hangs the worker.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-connections/nat"
	"github.com/google/uuid"
)

// Options tune a Runtime. Zero fields take the defaults noted.
type Options struct {
	CallTimeout time.Duration // bound on one plain Engine call (inspect, create, start, …); default 30s
	PullTimeout time.Duration // bound on one image pull; default 10m
	StopGrace   time.Duration // how long a container gets to stop before it is killed; default 10s
	// Worker names the worker that owns the containers. When set, containers carry it in the
	// label cube.worker, and List and Watch see only that worker's containers, so that several
	// workers can share one Engine.
	Worker string
}

// LabelWorker is the container label naming the worker that owns the container.
const LabelWorker = "cube.worker"

// Runtime is a worker.Runtime backed by a Docker Engine.
type Runtime struct {
	cli  *client.Client
	opts Options

	pullMu sync.Mutex
	pulls  map[string]*pull // pulls under way, by image reference
}

// pull is one image pull that any number of starts wait for.
type pull struct {
	done chan struct{}
	err  error
}

// New connects to the Docker Engine named by the environment (DOCKER_HOST and friends, or the
// default socket), negotiating the API version. It does not contact the Engine; use Ping.
func New(opts Options) (*Runtime, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return NewWithClient(cli, opts), nil
}

// NewWithClient returns a Runtime that uses cli.
func NewWithClient(cli *client.Client, opts Options) *Runtime {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.PullTimeout <= 0 {
		opts.PullTimeout = 10 * time.Minute
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	return &Runtime{cli: cli, opts: opts, pulls: make(map[string]*pull)}
}

// Close releases the client's connections.
func (r *Runtime) Close() error { return r.cli.Close() }

// Ping returns nil when the Engine answers, and an EUNAVAILABLE error otherwise.
func (r *Runtime) Ping(ctx context.Context) error {
	ctx, cancel := r.call(ctx)
	defer cancel()
	if _, err := r.cli.Ping(ctx); err != nil {
		return convert(err, "ping docker")
	}
	return nil
}

// Start pulls the task's image when it is missing, then creates and starts its container and
// returns it with its published ports. A container that was created but could not be started is
// removed.
func (r *Runtime) Start(ctx context.Context, t task.Task) (task.Container, error) {
	if err := r.ensureImage(ctx, t.Image); err != nil {
		return task.Container{}, err
	}
	cfg, hostCfg, err := containerConfig(t, r.opts.StopGrace)
	if r.opts.Worker != "" {
		cfg.Labels[LabelWorker] = r.opts.Worker
	}
	if err != nil {
		return task.Container{}, err
	}
	name := containerName(t)

	cctx, cancel := r.call(ctx)
	created, err := r.cli.ContainerCreate(cctx, cfg, hostCfg, nil, nil, name)
	cancel()
	if err != nil {
		return task.Container{}, convert(err, "create container")
	}
	sctx, cancel := r.call(ctx)
	err = r.cli.ContainerStart(sctx, created.ID, container.StartOptions{})
	cancel()
	if err != nil {
		r.remove(context.WithoutCancel(ctx), created.ID)
		return task.Container{}, convert(err, "start container")
	}
	c, err := r.Inspect(ctx, created.ID)
	if err != nil {
		// The container runs, but its ports are unknown; the worker would lose track of it.
		r.remove(context.WithoutCancel(ctx), created.ID)
		return task.Container{}, err
	}
	return c, nil
}

// Stop stops the container, giving it the grace period, then removes it. A container that is
// already stopped, being removed, or gone is success.
func (r *Runtime) Stop(ctx context.Context, containerID string) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.StopGrace+r.opts.CallTimeout)
	defer cancel()
	err := r.cli.ContainerStop(ctx, containerID, container.StopOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return convert(err, "stop container")
	}
	return r.remove(ctx, containerID)
}

func (r *Runtime) remove(ctx context.Context, containerID string) error {
	ctx, cancel := r.call(ctx)
	defer cancel()
	err := r.cli.ContainerRemove(ctx, containerID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		return nil
	}
	return convert(err, "remove container")
}

// Inspect returns the container's state, or an ENOTFOUND error when it does not exist.
func (r *Runtime) Inspect(ctx context.Context, containerID string) (task.Container, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	info, err := r.cli.ContainerInspect(ctx, containerID)
	if err != nil {
		return task.Container{}, convert(err, "inspect container")
	}
	c := task.Container{ID: info.ID}
	if info.Config != nil {
		c.TaskID, _ = uuid.Parse(info.Config.Labels[task.LabelTaskID])
	}
	if s := info.State; s != nil {
		c.Running = s.Running || s.Restarting || s.Paused
		c.ExitCode = s.ExitCode
		c.OOMKilled = s.OOMKilled
		c.Error = s.Error
		c.StartedAt = parseTime(s.StartedAt)
		c.FinishedAt = parseTime(s.FinishedAt)
	}
	if info.NetworkSettings != nil {
		c.HostPorts = hostPorts(info.NetworkSettings.Ports)
	}
	return c, nil
}

// List returns every container labelled with task.LabelTaskID, running or not.
func (r *Runtime) List(ctx context.Context) ([]task.Container, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: r.labelFilters(),
	})
	if err != nil {
		return nil, convert(err, "list containers")
	}
	out := make([]task.Container, 0, len(list))
	for _, s := range list {
		id, _ := uuid.Parse(s.Labels[task.LabelTaskID])
		out = append(out, task.Container{ID: s.ID, TaskID: id, Running: s.State == container.StateRunning})
	}
	return out, nil
}

// Watch streams the Engine's start, die, oom and destroy events of labelled containers to fn,
// beginning at since, until ctx is done or the stream breaks.
func (r *Runtime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := r.labelFilters()
	f.Add("type", string(events.ContainerEventType))
	for _, a := range []events.Action{events.ActionStart, events.ActionDie, events.ActionOOM, events.ActionDestroy} {
		f.Add("event", string(a))
	}
	opts := events.ListOptions{Filters: f}
	if !since.IsZero() {
		opts.Since = since.UTC().Format(time.RFC3339Nano)
	}
	// The SDK's Events reads the client's API version without the lock that lazy negotiation
	// takes, so negotiate first: a ping that fails ends this subscription attempt instead.
	pctx, pcancel := r.call(ctx)
	ping, err := r.cli.Ping(pctx)
	pcancel()
	if err != nil {
		return convert(err, "watch docker events")
	}
	r.cli.NegotiateAPIVersionPing(ping)
	msgs, errs := r.cli.Events(ctx, opts)
	for {
		select {
		case m := <-msgs:
			id, err := uuid.Parse(m.Actor.Attributes[task.LabelTaskID])
			if err != nil {
				continue
			}
			ev := task.ContainerEvent{
				Kind:        task.ContainerEventKind(m.Action),
				ContainerID: m.Actor.ID,
				TaskID:      id,
				Time:        time.Unix(0, m.TimeNano),
			}
			if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil {
				ev.ExitCode = code
			}
			fn(ev)
		case err := <-errs:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("event stream closed")
			}
			return convert(err, "watch docker events")
		}
	}
}

// ensureImage makes sure ref is present, pulling it when it is missing. Concurrent calls for the
// same reference share one pull.
func (r *Runtime) ensureImage(ctx context.Context, ref string) error {
	ictx, cancel := r.call(ctx)
	_, err := r.cli.ImageInspect(ictx, ref)
	cancel()
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return convert(err, "inspect image")
	}

	r.pullMu.Lock()
	p, ok := r.pulls[ref]
	if !ok {
		p = &pull{done: make(chan struct{})}
		r.pulls[ref] = p
		go func() {
			// The pull belongs to every waiter, so it outlives the first caller's context.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.PullTimeout)
			defer cancel()
			p.err = r.pull(pctx, ref)
			r.pullMu.Lock()
			delete(r.pulls, ref)
			r.pullMu.Unlock()
			close(p.done)
		}()
	}
	r.pullMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return task.Wrap(task.EUNAVAILABLE, ctx.Err(), fmt.Sprintf("image pull failed: %s", ref))
	}
}

func (r *Runtime) pull(ctx context.Context, ref string) error {
	rc, err := r.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return pullError(ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return pullError(ref, err)
		}
		if m.Error != nil {
			return pullError(ref, errors.New(m.Error.Message))
		}
	}
}

func pullError(ref string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	return &task.Error{Code: task.ENOTFOUND, Message: fmt.Sprintf("image pull failed: %s: %s", ref, msg)}
}

// labelFilters selects the containers this Runtime owns.
func (r *Runtime) labelFilters() filters.Args {
	f := filters.NewArgs(filters.Arg("label", task.LabelTaskID))
	if r.opts.Worker != "" {
		f.Add("label", LabelWorker+"="+r.opts.Worker)
	}
	return f
}

// call bounds one Engine call.
func (r *Runtime) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opts.CallTimeout)
}

// containerName derives a unique, readable container name from the task.
func containerName(t task.Task) string {
	name := t.Name
	if name == "" {
		name = "task"
	}
	return fmt.Sprintf("cube-%s-%s-%s", name, t.ID.String()[:8], uuid.NewString()[:8])
}

// containerConfig translates a task's spec into Docker's configuration.
func containerConfig(t task.Task, grace time.Duration) (*container.Config, *container.HostConfig, error) {
	exposed := nat.PortSet{}
	bindings := nat.PortMap{}
	for _, p := range t.Ports() {
		port, err := nat.NewPort(nat.SplitProtoPort(p))
		if err != nil {
			return nil, nil, task.Errorf(task.EINVALID, "port %q: %v", p, err)
		}
		exposed[port] = struct{}{}
		bindings[port] = []nat.PortBinding{{HostPort: t.PortBindings[p]}}
	}
	stopTimeout := int(math.Ceil(grace.Seconds()))
	cfg := &container.Config{
		Image:        t.Image,
		Env:          t.Env,
		Cmd:          t.Cmd,
		ExposedPorts: exposed,
		StopTimeout:  &stopTimeout,
		Labels: map[string]string{
			task.LabelTaskID: t.ID.String(),
			"cube.task.name": t.Name,
		},
	}
	hostCfg := &container.HostConfig{
		PortBindings:  bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Resources: container.Resources{
			NanoCPUs: int64(t.Cpu * 1e9),
			Memory:   t.Memory,
		},
	}
	return cfg, hostCfg, nil
}

// hostPorts converts Docker's port map, leaving out ports that are not published.
func hostPorts(ports nat.PortMap) task.PortMap {
	out := task.PortMap{}
	for port, bs := range ports {
		for _, b := range bs {
			if b.HostPort == "" {
				continue
			}
			out[string(port)] = append(out[string(port)], task.PortBinding{HostIP: b.HostIP, HostPort: b.HostPort})
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

// convert turns a Docker error into a task error of the right kind, with msg as context.
func convert(err error, msg string) error {
	if err == nil {
		return nil
	}
	text := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	var code task.Code
	var netErr net.Error
	switch {
	case cerrdefs.IsNotFound(err):
		code = task.ENOTFOUND
	case cerrdefs.IsConflict(err):
		code = task.ECONFLICT
	case cerrdefs.IsInvalidArgument(err):
		code = task.EINVALID
	case client.IsErrConnectionFailed(err), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled), errors.As(err, &netErr), cerrdefs.IsUnavailable(err):
		code = task.EUNAVAILABLE
	default:
		code = task.EINTERNAL
	}
	return &task.Error{Code: code, Message: msg + ": " + text}
}
