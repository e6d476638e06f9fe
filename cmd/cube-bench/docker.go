package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
	"github.com/google/uuid"
)

// labelRun marks the containers cube-bench makes itself with the raw SDK; its value is the run ID.
const labelRun = "cube.bench.run"

// labelWorker and labelTaskID are the labels cube puts on its containers: the worker's name
// (docker.LabelWorker) and the task's ID (task.LabelTaskID).
const (
	labelWorker = "cube.worker"
	labelTaskID = "cube.task.id"
)

// taskKey is the key under which a tracker also files the events of a task's containers.
func taskKey(taskID string) string { return "task/" + taskID }

// callTimeout bounds one plain Docker call; stopTimeout bounds a stop, which may wait out the
// container's grace period.
const (
	callTimeout = 30 * time.Second
	stopTimeout = 45 * time.Second
)

// dockerEnv is the raw Docker SDK side of the benchmarks.
type dockerEnv struct {
	cli   *client.Client
	runID string
	image string
}

func newDockerEnv(ctx context.Context, runID, image string) (*dockerEnv, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ping, err := cli.Ping(pctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("the Docker Engine at %s does not answer: %w", cli.DaemonHost(), err)
	}
	// Events reads the client's API version without the lock lazy negotiation takes: negotiate
	// now, before anything else runs concurrently.
	cli.NegotiateAPIVersionPing(ping)
	return &dockerEnv{cli: cli, runID: runID, image: image}, nil
}

func (d *dockerEnv) close() error { return d.cli.Close() }

// checkImage fails when the test image is missing: the worker would try to pull it.
func (d *dockerEnv) checkImage(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := d.cli.ImageInspect(ctx, d.image); err != nil {
		return fmt.Errorf("image %s: %w (build it with make images)", d.image, err)
	}
	return nil
}

// rawConfig is what cube's Docker adapter asks of the Engine for a task with the image, Cmd
// --listen :7777 and ExposedPorts 7777/tcp: the port published on a free host port, Docker's
// restart policy off, the same stop timeout and a label.
func (d *dockerEnv) rawConfig() (*container.Config, *container.HostConfig, string) {
	port := nat.Port("7777/tcp")
	stopTimeout := 10
	cfg := &container.Config{
		Image:        d.image,
		Cmd:          []string{"--listen", ":7777"},
		ExposedPorts: nat.PortSet{port: {}},
		StopTimeout:  &stopTimeout,
		Labels:       map[string]string{labelRun: d.runID, "cube.bench.name": "raw"},
	}
	hostCfg := &container.HostConfig{
		PortBindings:  nat.PortMap{port: {{HostPort: ""}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	// cube names containers cube-<name>-<8 of task ID>-<8 random>; the same length here.
	name := fmt.Sprintf("cube-bench-%s-%s", d.runID, uuid.NewString()[:8])
	return cfg, hostCfg, name
}

// createStart creates and starts one raw container and returns its ID. With full set it also
// does what cube's adapter does around create+start: inspect the image first and the container
// after. A container it made is left to the caller (and to the labelled cleanup) even on error.
func (d *dockerEnv) createStart(ctx context.Context, full bool) (string, error) {
	cfg, hostCfg, name := d.rawConfig()
	if full {
		ictx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := d.cli.ImageInspect(ictx, d.image)
		cancel()
		if err != nil {
			return "", fmt.Errorf("inspect image: %w", err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	created, err := d.cli.ContainerCreate(cctx, cfg, hostCfg, nil, nil, name)
	cancel()
	if err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, callTimeout)
	err = d.cli.ContainerStart(sctx, created.ID, container.StartOptions{})
	cancel()
	if err != nil {
		return created.ID, fmt.Errorf("start: %w", err)
	}
	if full {
		ictx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := d.cli.ContainerInspect(ictx, created.ID)
		cancel()
		if err != nil {
			return created.ID, fmt.Errorf("inspect: %w", err)
		}
	}
	return created.ID, nil
}

// stopRemove stops a container with its grace period, then removes it, as cube's adapter does.
func (d *dockerEnv) stopRemove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := d.cli.ContainerStop(ctx, id, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop: %w", err)
	}
	return d.remove(ctx, id)
}

// remove force-removes a container; one that is gone or being removed is success.
func (d *dockerEnv) remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err := d.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) || strings.Contains(err.Error(), "already in progress") {
		return nil
	}
	return fmt.Errorf("remove %.12s: %w", id, err)
}

// gone reports whether the container no longer exists.
func (d *dockerEnv) gone(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := d.cli.ContainerInspect(ctx, id)
	switch {
	case err == nil:
		return false, nil
	case cerrdefs.IsNotFound(err):
		return true, nil
	}
	return false, err
}

// list returns the IDs of every container, running or not, that carries label ("key=value").
func (d *dockerEnv) list(ctx context.Context, label string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", label))})
	if err != nil {
		return nil, fmt.Errorf("list containers with label %s: %w", label, err)
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return ids, nil
}

// removeAll force-removes the containers, a few at a time.
func (d *dockerEnv) removeAll(ctx context.Context, ids []string) error {
	return eachLimited(ids, 8, func(id string) error { return d.remove(ctx, id) })
}

// eachLimited runs fn for every id, at most limit at once, and returns every error joined.
func eachLimited(ids []string, limit int, fn func(id string) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, limit)
	)
	for _, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := fn(id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// removeLabelled removes every container carrying label, and lists again until none is left
// (a create that was under way when the list was taken may land after it: on a loaded Engine, a
// create the worker gave up on after 30 s landed later still). It returns how many it removed.
func (d *dockerEnv) removeLabelled(ctx context.Context, label string) (int, error) {
	total := 0
	for range 10 {
		ids, err := d.list(ctx, label)
		if err != nil {
			return total, err
		}
		if len(ids) == 0 {
			return total, nil
		}
		if err := d.removeAll(ctx, ids); err != nil {
			return total, err
		}
		total += len(ids)
		time.Sleep(time.Second)
	}
	ids, err := d.list(ctx, label)
	if err == nil && len(ids) > 0 {
		err = fmt.Errorf("%d containers with label %s are left", len(ids), label)
	}
	return total, err
}

// tracker follows the Engine's start, die and destroy events of the run's containers (the worker's and
// cube-bench's own) and answers when each happened, by the Engine's clock (TimeNano).
type tracker struct {
	mu     sync.Mutex
	recs   map[string]*containerRec
	match  func(attrs map[string]string) bool
	broken chan struct{} // closed when the stream ends; err says why
	err    error
	// foreign counts the events of containers that are not the run's: other users of the
	// Engine, whose work slows the run's down and makes its figures noisier.
	foreign int
}

type containerRec struct {
	at map[events.Action]time.Time
	ch map[events.Action]chan struct{} // closed when the event has been seen
}

// trackedActions are the events a tracker follows.
var trackedActions = []events.Action{events.ActionStart, events.ActionDie, events.ActionDestroy}

// track subscribes to the Engine's container events from a second ago (so none is missed while
// the subscription is made) until ctx is done.
func (d *dockerEnv) track(ctx context.Context, workerName string) *tracker {
	t := &tracker{
		recs:   map[string]*containerRec{},
		broken: make(chan struct{}),
		match: func(attrs map[string]string) bool { // the run's workers' names all start with workerName
			return strings.HasPrefix(attrs[labelWorker], workerName) || attrs[labelRun] == d.runID
		},
	}
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))
	for _, a := range trackedActions {
		f.Add("event", string(a))
	}
	since := time.Now().Add(-time.Second)
	msgs, errs := d.cli.Events(ctx, events.ListOptions{Filters: f, Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())})
	go func() {
		for {
			select {
			case m := <-msgs:
				if t.match(m.Actor.Attributes) {
					at := time.Unix(0, m.TimeNano)
					t.record(m.Actor.ID, m.Action, at)
					if id := m.Actor.Attributes[labelTaskID]; id != "" {
						t.record(taskKey(id), m.Action, at)
					}
				} else {
					t.mu.Lock()
					t.foreign++
					t.mu.Unlock()
				}
			case err := <-errs:
				if err == nil {
					err = errors.New("event stream closed")
				}
				t.mu.Lock()
				t.err = err
				t.mu.Unlock()
				close(t.broken)
				return
			}
		}
	}()
	return t
}

// foreignEvents returns how many events of other containers the tracker has seen.
func (t *tracker) foreignEvents() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.foreign
}

// rec returns the record of container id, making it. Callers hold t.mu.
func (t *tracker) rec(id string) *containerRec {
	r, ok := t.recs[id]
	if !ok {
		r = &containerRec{at: map[events.Action]time.Time{}, ch: map[events.Action]chan struct{}{}}
		for _, a := range trackedActions {
			r.ch[a] = make(chan struct{})
		}
		t.recs[id] = r
	}
	return r
}

// record notes the first event of each kind for a container.
func (t *tracker) record(id string, action events.Action, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rec(id)
	if _, seen := r.at[action]; seen || r.ch[action] == nil {
		return
	}
	r.at[action] = at
	close(r.ch[action])
}

// seen returns a channel that is closed once the event has been seen for key: a container ID,
// or taskKey of a task ID for the first such event of any of the task's containers.
func (t *tracker) seen(key string, action events.Action) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rec(key).ch[action]
}

// wait returns the Engine's time of the container's first start, die or destroy event, waiting
// for it up to timeout.
func (t *tracker) wait(ctx context.Context, id string, action events.Action, timeout time.Duration) (time.Time, error) {
	t.mu.Lock()
	ch := t.rec(id).ch[action]
	t.mu.Unlock()
	if ch == nil {
		return time.Time{}, fmt.Errorf("events %q are not tracked", action)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-t.broken:
		t.mu.Lock()
		defer t.mu.Unlock()
		return time.Time{}, fmt.Errorf("docker event stream: %w", t.err)
	case <-timer.C:
		return time.Time{}, fmt.Errorf("no %s event for container %.12s within %v", action, id, timeout)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recs[id].at[action], nil
}
