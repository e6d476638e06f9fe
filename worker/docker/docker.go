// Package docker runs cube's tasks on a Docker Engine. Its Runtime satisfies worker.Runtime:
// it pulls images when they are missing, creates and starts one labelled container per task
// start, stops and removes containers idempotently, and turns the Engine's event stream into
// task.ContainerEvents. Docker's errors become task error kinds here and nowhere else.
//
// Every call to the Engine gets a deadline, even when the caller's context has none, and every
// response body and stream is closed, so a hung Engine makes a task's state unknown but never
// hangs the worker.
//
// One call is not the SDK's: List (and ListTask, one task's containers) makes its own GET of
// /containers/json through the SDK client's transport at its negotiated version, and reads the
// answer one container at a time, keeping the few fields and labels it needs (list.go): the
// SDK's ContainerList holds every container's whole summary at once, which at a thousand
// containers doubled the heap the collector aims for every reconcile.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	"github.com/google/uuid"
)

// Options tune a Runtime. Zero fields take the defaults noted.
type Options struct {
	CallTimeout time.Duration // bound on one plain Engine call (inspect, create, start, …); default 30s
	PullTimeout time.Duration // bound on one image pull; default 10m
	StopGrace   time.Duration // how long a container gets to stop before it is killed; default 10s
	// PullInactivity aborts a pull that reports no progress for this long; default 1m.
	PullInactivity time.Duration
	// DockerConfig is the docker CLI config file whose "auths" give registry credentials to
	// tasks that bring none; default $DOCKER_CONFIG/config.json or ~/.docker/config.json.
	DockerConfig string
	// Worker names the worker that owns the containers. When set, containers carry it in the
	// label cube.worker, and List and Watch see only that worker's containers, so that several
	// workers can share one Engine.
	Worker string
	// EngineTLS says that the client talks TLS to a tcp:// Engine host: List, which makes its
	// own request through the client's transport, then addresses it by https. New sets it as
	// the SDK's client.FromEnv decides (DOCKER_CERT_PATH set); NewWithClient's caller, who
	// made the client, says so itself.
	EngineTLS bool
	// Policy is the host access the worker grants. Start checks each bind source against its
	// AllowBindMounts once more, on the source it has pinned; the zero Policy refuses every
	// bind.
	Policy task.Policy
	// PinDir is where bind sources are pinned while their container starts; default
	// /run/cube/pins. It must not lie under a path tasks may bind-mount.
	PinDir string
	// LogMaxSize and LogMaxFiles bound a container's log: the json-file driver rotates the log
	// at LogMaxSize bytes (default 10 MiB) and keeps LogMaxFiles files (default 3).
	LogMaxSize  int64
	LogMaxFiles int
	// ImageState is the file where the runtime records the images it pulled, for
	// CollectImages; "" keeps the record in memory.
	ImageState string
	Logger     *slog.Logger // default slog.Default()
	// Now is the clock that stamps when a pulled image was last used and decides when it is
	// old enough to collect; default time.Now. Deadlines and the durations it measures (a
	// pull's) stay on the real clock.
	Now func() time.Time
}

// LabelWorker is the container label naming the worker that owns the container.
const LabelWorker = "cube.worker"

// Runtime is a worker.Runtime backed by a Docker Engine.
type Runtime struct {
	cli  *client.Client
	opts Options

	pullMu sync.Mutex
	pulls  map[string]*pull // pulls under way, by image reference and credentials

	pinOnce sync.Once
	pins    *hostpath.Pinner // made on the first start with a bind mount
	pinErr  error
	imgMu   sync.Mutex
	images  images // the images this runtime pulled

	specs specCache    // the decoded spec labels of the containers List saw
	api   apiState     // what List's own request to the Engine needs
	http  *http.Client // the SDK client's own, for List
}

// New connects to the Docker Engine named by the environment (DOCKER_HOST and friends, or the
// default socket), negotiating the API version. It does not contact the Engine; use Ping.
func New(opts Options) (*Runtime, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	opts.EngineTLS = os.Getenv(client.EnvOverrideCertPath) != "" // FromEnv's rule for TLS
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
	if opts.PullInactivity <= 0 {
		opts.PullInactivity = time.Minute
	}
	if opts.DockerConfig == "" {
		opts.DockerConfig = defaultDockerConfig()
	}
	if opts.LogMaxSize <= 0 {
		opts.LogMaxSize = 10 << 20
	}
	if opts.LogMaxFiles <= 0 {
		opts.LogMaxFiles = 3
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Runtime{cli: cli, opts: opts, pulls: make(map[string]*pull), images: loadImages(opts.ImageState), http: cli.HTTPClient()}
}

// Close releases the client's connections.
func (r *Runtime) Close() error {
	r.pinOnce.Do(func() {}) // waits for a pinner being made
	if r.pins != nil {
		r.pins.Close()
	}
	return r.cli.Close()
}

// Ping returns nil when the Engine answers, and an EUNAVAILABLE error otherwise.
func (r *Runtime) Ping(ctx context.Context) error {
	ctx, cancel := r.call(ctx)
	defer cancel()
	if _, err := r.cli.Ping(ctx); err != nil {
		return convert(err, "ping docker")
	}
	return nil
}

// EngineID returns the Engine's ID (docker info's ID), which no two Engines share, or an
// EUNAVAILABLE error when the Engine does not answer.
func (r *Runtime) EngineID(ctx context.Context) (string, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	info, err := r.cli.Info(ctx)
	if err != nil {
		return "", convert(err, "docker info")
	}
	if info.ID == "" {
		return "", errors.New("docker info: the Engine reports no ID")
	}
	return info.ID, nil
}

// Start makes sure the task's image is present as its PullPolicy says, then creates and starts
// its container and returns it with its published ports and address. A container that was
// created but could not be started is removed. progress, if not nil, hears of each step.
//
// With the default policy the image is not looked up first: the create says when it is missing,
// and only then is it pulled, so the common case costs no extra call.
func (r *Runtime) Start(ctx context.Context, t task.Task, progress func(task.StartStep)) (task.Container, error) {
	if progress == nil {
		progress = func(task.StartStep) {}
	}
	cfg, hostCfg, err := containerConfig(t, r.opts.StopGrace)
	if err == nil {
		hostCfg.LogConfig = r.logConfig()
	}
	if err != nil {
		return task.Container{}, err
	}
	if r.opts.Worker != "" {
		cfg.Labels[LabelWorker] = r.opts.Worker
	}
	name := ContainerName(t)
	release, err := r.pinBinds(t, hostCfg)
	if err != nil {
		return task.Container{}, err
	}
	// The Engine mounts the sources as it starts the container; the container's own mounts
	// hold them after that.
	defer release()
	if t.PullPolicy == task.PullAlways {
		// Only an image that was not here before the pull (or that this worker pulled before)
		// is this worker's to remove later.
		before, err := r.imageID(ctx, t.Image)
		if err != nil {
			return task.Container{}, err
		}
		if err := r.pullImage(ctx, t, progress); err != nil {
			return task.Container{}, err
		}
		if before == "" || r.pulledBefore(t.Image) {
			r.pulled(ctx, t.Image)
		}
	}
	created, err := r.create(ctx, cfg, hostCfg, name)
	if err != nil && cerrdefs.IsNotFound(err) && t.PullPolicy != task.PullAlways {
		if t.PullPolicy == task.PullNever {
			return task.Container{}, &task.Error{Code: task.ENOTFOUND,
				Message: fmt.Sprintf("image %s is not present and PullPolicy is \"never\"", t.Image)}
		}
		if err := r.pullImage(ctx, t, progress); err != nil {
			return task.Container{}, err
		}
		r.pulled(ctx, t.Image)
		created, err = r.create(ctx, cfg, hostCfg, name)
	}
	made := err == nil // by this call, rather than by an earlier attempt of the same start
	if err != nil && cerrdefs.IsConflict(err) && t.LastEvent != "" {
		// The name is this start's: an earlier attempt (a worker that died, an answer that was
		// lost) made the container, or is still making it. Carry on from where it got to.
		var c task.Container
		c, made, err = r.existing(ctx, t, name, func() (container.CreateResponse, error) {
			return r.create(ctx, cfg, hostCfg, name)
		})
		if err != nil {
			return task.Container{}, err
		}
		created.ID = c.ID
		if !made && (c.Running || !c.StartedAt.IsZero()) {
			// Started already: running, or run and ended. The caller takes it up as it is.
			progress(task.StartStep{Type: task.RecordStarted, Message: "container " + task.ShortID(c.ID) + " (started by an earlier attempt)"})
			return c, nil
		}
	}
	if err != nil {
		return task.Container{}, convert(err, "create container")
	}
	r.used(t.Image)
	msg := "container " + task.ShortID(created.ID)
	if !made {
		msg += " (made by an earlier attempt, never started)"
	}
	progress(task.StartStep{Type: task.RecordCreated, Message: msg})
	sctx, cancel := r.call(ctx)
	err = r.cli.ContainerStart(sctx, created.ID, container.StartOptions{})
	cancel()
	if err != nil {
		r.Remove(context.WithoutCancel(ctx), created.ID)
		return task.Container{}, startError(err)
	}
	c, err := r.Inspect(ctx, created.ID)
	if err != nil {
		// The container runs, but its ports are unknown; the worker would lose track of it.
		r.Remove(context.WithoutCancel(ctx), created.ID)
		return task.Container{}, err
	}
	progress(task.StartStep{Type: task.RecordStarted, Message: "container " + task.ShortID(created.ID)})
	return c, nil
}

// existing finds the container of t's start whose create failed on a name conflict. The name
// is taken from the moment the Engine begins a create until the container is removed, so a
// create still under way (or a removal) shows as a conflict while the container cannot be
// inspected yet (or any more): existing waits for either, trying create again when the name may
// be free, until ctx is done. It returns the container and whether create made it after all.
// A container by that name that is not this start's (another worker's, another task's) is an
// ECONFLICT error: it is never taken up.
func (r *Runtime) existing(ctx context.Context, t task.Task, name string, create func() (container.CreateResponse, error)) (task.Container, bool, error) {
	delay := 20 * time.Millisecond
	for {
		c, err := r.Inspect(ctx, name)
		switch {
		case err == nil && c.Removing:
			// Being removed: wait until the name is free.
		case err == nil:
			if err := r.isStartOf(c, t); err != nil {
				return task.Container{}, false, err
			}
			return c, false, nil
		case task.ErrorCode(err) != task.ENOTFOUND:
			return task.Container{}, false, err
		default:
			created, err := create()
			if err == nil {
				c, err := r.Inspect(ctx, created.ID)
				if err != nil {
					r.Remove(context.WithoutCancel(ctx), created.ID)
					return task.Container{}, false, err
				}
				return c, true, nil
			}
			if !cerrdefs.IsConflict(err) {
				return task.Container{}, false, convert(err, "create container")
			}
		}
		select {
		case <-ctx.Done():
			return task.Container{}, false, convert(ctx.Err(), "create container "+name+": the name is taken by a container being created or removed")
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// isStartOf returns nil when c was made by the start of t it is named for: the same worker,
// task, start event and restart.
func (r *Runtime) isStartOf(c task.Container, t task.Task) error {
	if c.TaskID == t.ID && c.EventID == t.LastEvent && c.Worker == r.opts.Worker &&
		(!c.SpecRead || c.SpecRestartCount == t.RestartCount) {
		return nil
	}
	return &task.Error{Code: task.ECONFLICT, Message: fmt.Sprintf(
		"create container: the name %s is taken by container %s, which is not this start's (task %s, event %s, worker %q)",
		ContainerName(t), task.ShortID(c.ID), c.TaskID, c.EventID, c.Worker)}
}

// hostPortRE finds the host address in the Engine's "port is already allocated" and "address
// already in use" messages.
var hostPortRE = regexp.MustCompile(`(?:Bind for |listen tcp[46]? )(\S+?):(\d+)(?::| failed)`)

func (r *Runtime) create(ctx context.Context, cfg *container.Config, hostCfg *container.HostConfig, name string) (container.CreateResponse, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	return r.cli.ContainerCreate(ctx, cfg, hostCfg, nil, nil, name)
}

// startError explains a failed start; a host port that is taken is the common case.
func startError(err error) error {
	text := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	if strings.Contains(text, "port is already allocated") || strings.Contains(text, "address already in use") {
		port := "a host port"
		if m := hostPortRE.FindStringSubmatch(text); m != nil {
			port = "host port " + m[2]
		}
		return &task.Error{Code: task.ECONFLICT, Message: fmt.Sprintf("start container: %s is already in use (Task.PortBindings): %s", port, text)}
	}
	return convert(err, "start container")
}

// Stop stops the container: its stop signal, then SIGKILL after grace (0: the grace the
// container was created with). A container that is already stopped or gone is success.
func (r *Runtime) Stop(ctx context.Context, containerID string, grace time.Duration) error {
	opts := container.StopOptions{}
	wait := r.opts.StopGrace
	if grace > 0 {
		secs := int(math.Ceil(grace.Seconds()))
		opts.Timeout = &secs
		wait = grace
	}
	ctx, cancel := context.WithTimeout(ctx, wait+r.opts.CallTimeout)
	defer cancel()
	err := r.cli.ContainerStop(ctx, containerID, opts)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return convert(err, "stop container")
	}
	return nil
}

// Remove removes the container, killing it if it still runs. A container that is gone or
// being removed is success.
func (r *Runtime) Remove(ctx context.Context, containerID string) error {
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

// Exec runs cmd in the running container and returns its exit code and its output, stdout and
// stderr together, cut to 4 KiB. ctx bounds the whole check (its deadline is the check's
// timeout).
//
// An Engine that does not answer is told apart from a command that is slow: a deadline that
// passes while the Engine is asked to create or start the exec, or to report its exit code, is an
// EUNAVAILABLE error (the check could not be carried out); a deadline that passes while the
// command runs is an EINTERNAL error saying the command did not finish in time (the check ran and
// failed) once the Engine confirms that the command still runs, and EUNAVAILABLE when it does not
// answer that.
func (r *Runtime) Exec(ctx context.Context, containerID string, cmd []string) (int, string, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	created, err := r.cli.ContainerExecCreate(ctx, containerID, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, "", convert(err, "exec in container")
	}
	resp, err := r.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, "", convert(err, "exec in container")
	}
	defer resp.Close()
	out := &limitedBuffer{max: 4 << 10}
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(out, out, resp.Reader)
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		resp.Close()
		<-done
		code, err := r.execTimedOut(ctx, created.ID)
		return code, out.String(), err
	}
	if err != nil {
		return 0, out.String(), convert(err, "read exec output")
	}
	info, err := r.cli.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return 0, out.String(), convert(err, "inspect exec")
	}
	return info.ExitCode, out.String(), nil
}

// execTimedOut says why an exec's output did not end before ctx did: the command still runs
// (an EINTERNAL error: the check failed), or it has ended after all (its exit code), or the Engine
// does not say (EUNAVAILABLE). The question gets its own bound, min(CallTimeout, 5s).
func (r *Runtime) execTimedOut(ctx context.Context, execID string) (int, error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return 0, convert(ctx.Err(), "exec in container")
	}
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(r.opts.CallTimeout, 5*time.Second))
	defer cancel()
	info, err := r.cli.ContainerExecInspect(ictx, execID)
	switch {
	case err != nil:
		return 0, convert(err, "exec in container: the check's time ran out, and the Engine does not say whether the command still runs")
	case info.Running:
		return 0, task.Errorf(task.EINTERNAL, "exec in container: the command did not finish in time")
	}
	return info.ExitCode, nil
}

// limitedBuffer keeps the first max bytes written to it and discards the rest.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Inspect returns the container's state, or an ENOTFOUND error when it does not exist.
func (r *Runtime) Inspect(ctx context.Context, containerID string) (task.Container, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	info, err := r.cli.ContainerInspect(ctx, containerID)
	if err != nil {
		return task.Container{}, convert(err, "inspect container")
	}
	c := task.Container{ID: info.ID, Created: parseTime(info.Created)}
	if info.Config != nil {
		fromLabels(&c, info.Config.Labels)
	}
	if s := info.State; s != nil {
		c.Running = s.Running || s.Restarting || s.Paused
		c.Paused = s.Paused
		c.Removing = s.Status == container.StateRemoving
		c.ExitCode = s.ExitCode
		c.OOMKilled = s.OOMKilled
		c.Error = s.Error
		c.StartedAt = parseTime(s.StartedAt)
		c.FinishedAt = parseTime(s.FinishedAt)
	}
	if s := info.State; s != nil && s.Health != nil {
		c.Health = s.Health.Status
	}
	if ns := info.NetworkSettings; ns != nil {
		c.HostPorts = hostPorts(ns.Ports)
		c.IPAddress = ns.IPAddress
		if c.IPAddress == "" {
			for _, n := range ns.Networks {
				if n != nil && n.IPAddress != "" {
					c.IPAddress = n.IPAddress
					break
				}
			}
		}
	}
	return c, nil
}

// Watch streams the Engine's start, die, oom and destroy events of labelled containers to fn,
// beginning at since, until ctx is done or the stream breaks.
func (r *Runtime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := r.labelFilters()
	f.Add("type", string(events.ContainerEventType))
	for _, a := range []events.Action{events.ActionStart, events.ActionDie, events.ActionOOM, events.ActionDestroy, events.ActionHealthStatus,
		events.ActionPause, events.ActionUnPause} {
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
			action, health, _ := strings.Cut(string(m.Action), ":")
			ev := task.ContainerEvent{
				Kind:        task.ContainerEventKind(action),
				Health:      strings.TrimSpace(health),
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

// logConfig is the log of every task container: json-file, which the Engine rotates, so that a
// chatty task cannot fill the disk, and which GET /tasks/{id}/logs reads as before.
func (r *Runtime) logConfig() container.LogConfig {
	return container.LogConfig{Type: "json-file", Config: map[string]string{
		"max-size": strconv.FormatInt(r.opts.LogMaxSize, 10),
		"max-file": strconv.Itoa(r.opts.LogMaxFiles),
	}}
}

// ContainerName derives the container's name from the task and the start that makes it: the
// start's event and the task's RestartCount (a restart the policy decides counts up, one made by
// an event has a new event). The Engine refuses a second container by one name, so a start
// cannot make two containers however often it is tried, even while an earlier attempt's create
// is still under way. A start without an event gets a random suffix and no such promise.
func ContainerName(t task.Task) string {
	name := t.Name
	if name == "" {
		name = "task"
	}
	start := task.ShortID(uuid.NewString())
	if ev, err := uuid.Parse(t.LastEvent); err == nil {
		start = task.ShortID(ev.String()) + "-" + strconv.Itoa(t.RestartCount)
	}
	return fmt.Sprintf("cube-%s-%s-%s", name, task.ShortID(t.ID.String()), start)
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
	if t.StopTimeout > 0 {
		stopTimeout = t.StopTimeout
	}
	cfg := &container.Config{
		StopSignal:   t.StopSignal,
		Image:        t.Image,
		Env:          t.Env,
		Cmd:          t.Cmd,
		ExposedPorts: exposed,
		StopTimeout:  &stopTimeout,
		Labels: map[string]string{
			task.LabelTaskID:  t.ID.String(),
			task.LabelEventID: t.LastEvent,
			task.LabelSpec:    specLabel(t),
			"cube.task.name":  t.Name,
		},
	}
	hostCfg := &container.HostConfig{
		PortBindings:  bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Resources: container.Resources{
			NanoCPUs:          int64(t.Cpu * 1e9),
			Memory:            t.Memory,
			MemoryReservation: t.MemoryReservation,
		},
	}
	if t.PidsLimit > 0 {
		limit := t.PidsLimit
		hostCfg.Resources.PidsLimit = &limit
	}
	if err := applyHostAccess(t, hostCfg); err != nil {
		return nil, nil, err
	}
	return cfg, hostCfg, nil
}

// specLabel is the task's spec as JSON, without credentials or history: what a worker that lost
// its state needs to rebuild the task from its container.
func specLabel(t task.Task) string {
	t = t.Redacted()
	t.State, t.ContainerID, t.HostPorts, t.Error, t.ExitCode = task.Pending, "", nil, "", 0
	t.Events, t.LastHealthCheck, t.HealthStatus, t.Pull, t.Unconfirmed = nil, nil, "", nil, ""
	t.StartTime, t.FinishTime = time.Time{}, time.Time{}
	b, err := json.Marshal(t)
	if err != nil {
		return ""
	}
	return string(b)
}

// fromLabels fills in what a container's labels say about its task.
func fromLabels(c *task.Container, labels map[string]string) {
	idLabels(c, labels)
	c.Spec = decodeSpec(labels[task.LabelSpec], c.TaskID)
	if c.Spec != nil {
		c.SpecRead, c.SpecRestartCount = true, c.Spec.RestartCount
	}
}

// idLabels sets the task, event and worker of c from its labels.
func idLabels(c *task.Container, labels map[string]string) {
	c.TaskID, _ = uuid.Parse(labels[task.LabelTaskID])
	c.EventID = labels[task.LabelEventID]
	c.Worker = labels[LabelWorker]
}

// decodeSpec returns the task a spec label holds, or nil when it holds none or another task's.
func decodeSpec(label string, taskID uuid.UUID) *task.Task {
	if label == "" {
		return nil
	}
	var t task.Task
	if json.Unmarshal([]byte(label), &t) != nil || t.ID != taskID {
		return nil
	}
	return &t
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
