package metrics

import (
	"context"
	"io"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/google/uuid"
)

// Runtime returns rt with every call timed into cube_docker_call_duration_seconds, and every
// failed call counted in cube_docker_call_errors_total, by operation. Watch, a long-lived stream,
// is passed through untimed.
func (m *Metrics) Runtime(rt worker.Runtime) worker.Runtime {
	return &timedRuntime{rt: rt, m: m}
}

// timedRuntime is a worker.Runtime that times the calls of the one it wraps.
type timedRuntime struct {
	rt worker.Runtime
	m  *Metrics
}

var _ worker.Runtime = (*timedRuntime)(nil)

func (r *timedRuntime) Start(ctx context.Context, t task.Task, progress func(task.StartStep)) (c task.Container, err error) {
	defer func(start time.Time) { r.m.observeCall("start", start, err) }(time.Now())
	return r.rt.Start(ctx, t, progress)
}

func (r *timedRuntime) Stop(ctx context.Context, containerID string, grace time.Duration) (err error) {
	defer func(start time.Time) { r.m.observeCall("stop", start, err) }(time.Now())
	return r.rt.Stop(ctx, containerID, grace)
}

func (r *timedRuntime) Remove(ctx context.Context, containerID string) (err error) {
	defer func(start time.Time) { r.m.observeCall("remove", start, err) }(time.Now())
	return r.rt.Remove(ctx, containerID)
}

func (r *timedRuntime) Inspect(ctx context.Context, containerID string) (c task.Container, err error) {
	defer func(start time.Time) { r.m.observeCall("inspect", start, err) }(time.Now())
	return r.rt.Inspect(ctx, containerID)
}

func (r *timedRuntime) Exec(ctx context.Context, containerID string, cmd []string) (code int, out string, err error) {
	defer func(start time.Time) { r.m.observeCall("exec", start, err) }(time.Now())
	return r.rt.Exec(ctx, containerID, cmd)
}

func (r *timedRuntime) List(ctx context.Context) (list []task.Container, err error) {
	defer func(start time.Time) { r.m.observeCall("list", start, err) }(time.Now())
	return r.rt.List(ctx)
}

func (r *timedRuntime) ListTask(ctx context.Context, id uuid.UUID) (list []task.Container, err error) {
	defer func(start time.Time) { r.m.observeCall("list_task", start, err) }(time.Now())
	return r.rt.ListTask(ctx, id)
}

func (r *timedRuntime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	return r.rt.Watch(ctx, since, fn)
}

func (r *timedRuntime) Ping(ctx context.Context) (err error) {
	defer func(start time.Time) { r.m.observeCall("ping", start, err) }(time.Now())
	return r.rt.Ping(ctx)
}

func (r *timedRuntime) Logs(ctx context.Context, containerID string, opts task.LogOptions) (rc io.ReadCloser, err error) {
	defer func(start time.Time) { r.m.observeCall("logs", start, err) }(time.Now())
	return r.rt.Logs(ctx, containerID, opts)
}

func (r *timedRuntime) Stats(ctx context.Context, containerID string) (s task.ContainerStats, err error) {
	defer func(start time.Time) { r.m.observeCall("stats", start, err) }(time.Now())
	return r.rt.Stats(ctx, containerID)
}
