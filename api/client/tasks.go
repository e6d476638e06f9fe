package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cube-orchestrator/cube/internal/nodestats"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Submit sends the task event ev (POST /tasks) and returns the task as the worker stored it: a
// new task ID starts the task, a known one with a new event ID restarts it, an event ID already
// accepted changes nothing. It fails with EINVALID for a bad spec, ECONFLICT when the task's state
// forbids the event, and EFORBIDDEN for host access the worker does not allow.
func (c *Client) Submit(ctx context.Context, ev task.Event) (task.Task, error) {
	var t task.Task
	err := c.do(ctx, request{method: http.MethodPost, path: "/tasks", body: ev}, &t)
	return t, err
}

// Start submits t in a new event, with a new event ID, asking for it to run, and returns the task
// as the worker stored it (Scheduled, for a new task). A t without an ID gets a new one; a t with
// the ID of a known task restarts that task with t's spec. It fails as Submit does.
func (c *Client) Start(ctx context.Context, t task.Task) (task.Task, error) {
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	return c.Submit(ctx, task.Event{ID: uuid.New(), State: task.Running, Timestamp: time.Now().UTC(), Task: t})
}

// List returns every task the worker knows (GET /tasks), in the order they were submitted.
func (c *Client) List(ctx context.Context) ([]task.Task, error) {
	var ts []task.Task
	if err := c.do(ctx, request{method: http.MethodGet, path: "/tasks"}, &ts); err != nil {
		return nil, err
	}
	return ts, nil
}

// Get returns the task with the given ID (GET /tasks/{id}), or an ENOTFOUND error.
func (c *Client) Get(ctx context.Context, id uuid.UUID) (task.Task, error) {
	var t task.Task
	err := c.do(ctx, request{method: http.MethodGet, path: taskPath(id)}, &t)
	return t, err
}

// Stop asks the worker to stop the task (DELETE /tasks/{id}): its container is stopped and
// removed and the task ends Completed. It returns once the worker accepted the stop; it fails with
// ENOTFOUND for an unknown task.
func (c *Client) Stop(ctx context.Context, id uuid.UUID) error {
	return c.do(ctx, request{method: http.MethodDelete, path: taskPath(id)}, nil)
}

// Remove asks the worker to remove the task (DELETE /tasks/{id}?remove=true): it is stopped if
// it has not ended, its container is removed, and the task is forgotten. It returns once the
// worker accepted the removal, after which the task is not found; it fails with ENOTFOUND for an
// unknown task.
func (c *Client) Remove(ctx context.Context, id uuid.UUID) error {
	return c.do(ctx, request{method: http.MethodDelete, path: taskPath(id), query: url.Values{"remove": {"true"}}}, nil)
}

// Stats are a worker's node stats: memory, disk, CPU time, load, and TaskCount, the tasks
// Running. The JSON keys are those of goprocinfo's Linux types, which the book's manager reads.
type Stats = nodestats.Stats

// Stats returns the worker's node stats (GET /stats).
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.do(ctx, request{method: http.MethodGet, path: "/stats"}, &s)
	return s, err
}

// Version is the answer of GET /version: which build of cube the worker runs, and its name.
type Version struct {
	Version string // the release, or "dev"
	Commit  string // the commit it was built from
	Name    string // the worker's name
}

// Version returns the worker's version, commit and name (GET /version).
func (c *Client) Version(ctx context.Context) (Version, error) {
	var v Version
	err := c.do(ctx, request{method: http.MethodGet, path: "/version"}, &v)
	return v, err
}

// Healthz returns nil when the worker serves (GET /healthz).
func (c *Client) Healthz(ctx context.Context) error {
	return c.do(ctx, request{method: http.MethodGet, path: "/healthz"}, nil)
}

// Ready returns nil when the worker is ready to run tasks (GET /readyz), and otherwise an
// EUNAVAILABLE error with the worker's reason (the Docker Engine does not answer, say).
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, request{method: http.MethodGet, path: "/readyz"}, nil)
}

// TaskStats is one sample of a task's resource use, the answer of GET /tasks/{taskID}/stats,
// computed from the container runtime's stats.
type TaskStats struct {
	TaskID      uuid.UUID
	ContainerID string
	Time        time.Time // when the sample was read
	CPUPercent  float64   // CPU use over the runtime's last sampling interval, in % of one core (150 is 1.5 cores busy)
	MemoryUsage int64     // bytes in use, page cache not counted (as docker stats counts)
	MemoryLimit int64     // bytes the container may use: the task's Memory, or the node's memory without one
	NetworkRx   int64     // bytes received, all interfaces
	NetworkTx   int64     // bytes sent, all interfaces
	BlockRead   int64     // bytes read from block devices
	BlockWrite  int64     // bytes written to block devices
	PIDs        int64     // processes and threads in the container
}

// TaskStats returns one sample of the task's resource use (GET /tasks/{id}/stats). It fails with
// ENOTFOUND for an unknown task and ECONFLICT for a task that is not running.
func (c *Client) TaskStats(ctx context.Context, id uuid.UUID) (TaskStats, error) {
	var s TaskStats
	err := c.do(ctx, request{method: http.MethodGet, path: taskPath(id) + "/stats"}, &s)
	return s, err
}

// LogOptions says which of a task's output Logs returns.
type LogOptions struct {
	// Follow keeps the stream open, sending new output as the task prints it, until the
	// container ends or the context is done.
	Follow bool
	// Tail, when positive, is how many of the last lines to send first; negative sends none of
	// the earlier lines (with Follow: only new output); zero sends every line.
	Tail int
	// Since, when set, sends only output since then: an RFC 3339 time, or a Go duration such as
	// "10m" for that long before now on the worker's clock.
	Since string
	// Timestamps prefixes each line with the time the task printed it (RFC 3339, nanoseconds)
	// and a space.
	Timestamps bool
}

// query returns o as the query of GET /tasks/{id}/logs.
func (o LogOptions) query() url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "true")
	}
	switch {
	case o.Tail > 0:
		q.Set("tail", strconv.Itoa(o.Tail))
	case o.Tail < 0:
		q.Set("tail", "0")
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	return q
}

// Logs returns the task's output, stdout and stderr merged in the order printed, as plain text
// (GET /tasks/{id}/logs). The caller reads it to the end (with Follow, it ends when the container
// ends or ctx is done) and closes it. It fails with ENOTFOUND for an unknown task and ECONFLICT
// for a task that has no container (not started yet, or removed). An answer the worker cut short
// (its runtime's stream broke, the reader was too slow, the worker shut down) or whose
// connection broke ends with an error that says so, never with io.EOF; when ctx ends first, the
// error is ctx's.
func (c *Client) Logs(ctx context.Context, id uuid.UUID, opts LogOptions) (io.ReadCloser, error) {
	resp, cancel, err := c.send(ctx, request{method: http.MethodGet, path: taskPath(id) + "/logs", query: opts.query(), accept: "text/plain", stream: true})
	if err != nil {
		return nil, err
	}
	return &logsBody{body: body{ReadCloser: resp.Body, cancel: cancel}, ctx: ctx}, nil
}

// logsBody is the body of a logs answer: a read error other than the end is the answer cut short.
type logsBody struct {
	body
	ctx context.Context
}

func (b *logsBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && err != io.EOF {
		if cerr := b.ctx.Err(); cerr != nil {
			return n, cerr
		}
		return n, fmt.Errorf("client: the logs were cut short (the worker ended the answer with an error, or the connection broke): %w", err)
	}
	return n, err
}

// Metrics returns the worker's metrics in the Prometheus text format (GET /metrics).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, cancel, err := c.send(ctx, request{method: http.MethodGet, path: "/metrics", accept: "text/plain"})
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	return b, nil
}

// body is a response body that releases its request's resources when closed.
type body struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func taskPath(id uuid.UUID) string { return fmt.Sprintf("/tasks/%s", id) }
