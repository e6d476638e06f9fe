package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 5 * time.Second

// harness is a client of the real API over a running worker on a fake runtime.
type harness struct {
	rt *workertest.Runtime
	c  *client.Client
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	return newHarnessWith(tb, api.Options{})
}

// newHarnessWith is newHarness with the API's options (its logger is the worker's); its client
// sends no token.
func newHarnessWith(tb testing.TB, opts api.Options) *harness {
	tb.Helper()
	wh := testworker.Start(tb, testworker.Options{Serve: func(wh *testworker.Harness) http.Handler {
		opts.Logger = wh.Logger
		return api.New(wh.Worker, opts)
	}})
	return &harness{rt: wh.Fake, c: wh.Client(tb)}
}

func ctx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// waitState polls Get until the task is in state want.
func (h *harness) waitState(tb testing.TB, id uuid.UUID, want task.State) task.Task {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := h.c.Get(ctx(tb), id)
		if err != nil {
			tb.Fatalf("Get(%s): %v", id, err)
		}
		if got.State == want {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s after %v: got state %v, want %v", id, waitTimeout, got.State, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wantError fails the test unless err is an *client.Error with the given status, of the given
// kind, whose message holds every one of parts.
func wantError(tb testing.TB, err error, status int, code task.Code, parts ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got nil error, want %d %s", status, code)
	}
	var e *client.Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T): want a *client.Error", err, err)
	}
	if e.StatusCode != status {
		tb.Errorf("StatusCode: got %d, want %d", e.StatusCode, status)
	}
	if got := task.ErrorCode(err); got != code {
		tb.Errorf("task.ErrorCode: got %q, want %q", got, code)
	}
	var te *task.Error
	if !errors.As(err, &te) || te.Message != e.Message {
		tb.Errorf("errors.As *task.Error: got %v, want one with the message %q", te, e.Message)
	}
	if task.ErrorMessage(err) != err.Error() {
		tb.Errorf("task.ErrorMessage: got %q, want the error's own text %q", task.ErrorMessage(err), err.Error())
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			tb.Errorf("message: got %q, want it to contain %q", err.Error(), p)
		}
	}
}

func echo() task.Task {
	return task.Task{Name: "web-" + uuid.NewString()[:8], Image: "cube-echo:latest", ExposedPorts: task.PortSet{"7777/tcp": {}}}
}

func TestTaskLifecycle(t *testing.T) {
	h := newHarness(t)
	c := h.c

	list, err := c.List(ctx(t))
	if err != nil || list == nil || len(list) != 0 {
		t.Fatalf("List with no tasks: got %v, %v; want an empty list", list, err)
	}

	spec := echo()
	started, err := c.Start(ctx(t), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if started.ID == uuid.Nil || started.State != task.Scheduled || started.Name != spec.Name {
		t.Errorf("Start: got ID %s state %v name %q, want a new ID, Scheduled, %s", started.ID, started.State, started.Name, spec.Name)
	}
	run := h.waitState(t, started.ID, task.Running)
	if len(run.HostPorts["7777/tcp"]) != 1 {
		t.Errorf("HostPorts: got %v, want one binding of 7777/tcp", run.HostPorts)
	}

	list, err = c.List(ctx(t))
	if err != nil || len(list) != 1 || list[0].ID != started.ID {
		t.Fatalf("List: got %v, %v; want the one task", list, err)
	}

	stats, err := c.Stats(ctx(t))
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if stats.TaskCount != 1 || stats.MemStats == nil || stats.MemStats.MemTotal == 0 {
		t.Errorf("Stats: got TaskCount %d MemStats %v, want 1 and the node's memory", stats.TaskCount, stats.MemStats)
	}

	if err := c.Stop(ctx(t), started.ID); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	done := h.waitState(t, started.ID, task.Completed)
	if done.FinishTime.IsZero() {
		t.Errorf("FinishTime: got zero, want set")
	}

	if err := c.Remove(ctx(t), started.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	_, err = c.Get(ctx(t), started.ID)
	wantError(t, err, http.StatusNotFound, task.ENOTFOUND, started.ID.String())
	wantError(t, c.Remove(ctx(t), started.ID), http.StatusNotFound, task.ENOTFOUND, started.ID.String())
}

func TestSubmit(t *testing.T) {
	h := newHarness(t)
	tk := echo()
	tk.ID = uuid.New()
	tk.State = task.Scheduled
	ev := task.Event{ID: uuid.New(), State: task.Running, Task: tk}
	got, err := h.c.Submit(ctx(t), ev)
	if err != nil || got.ID != tk.ID {
		t.Fatalf("Submit: got %s, %v; want task %s", got.ID, err, tk.ID)
	}
	// The same event again changes nothing.
	if again, err := h.c.Submit(ctx(t), ev); err != nil || again.ID != tk.ID {
		t.Fatalf("Submit again: got %s, %v; want task %s", again.ID, err, tk.ID)
	}
	h.waitState(t, tk.ID, task.Running)
	if n := len(h.rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}

	// Start with a known ID restarts the task.
	tk.RestartCount = 1
	if _, err := h.c.Start(ctx(t), tk); err != nil {
		t.Fatalf("Start of a known task: %v", err)
	}
	deadline := time.Now().Add(waitTimeout)
	for len(h.rt.Starts()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("runtime starts after a restart: got %d, want 2", len(h.rt.Starts()))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestErrorKinds(t *testing.T) {
	h := newHarness(t)
	c := h.c
	unknown := uuid.New()

	_, err := c.Get(ctx(t), unknown)
	wantError(t, err, http.StatusNotFound, task.ENOTFOUND, "task "+unknown.String()+" not found")
	wantError(t, c.Stop(ctx(t), unknown), http.StatusNotFound, task.ENOTFOUND, unknown.String())

	_, err = c.Start(ctx(t), task.Task{Name: "no-image"})
	wantError(t, err, http.StatusBadRequest, task.EINVALID, "Task.Image: is required")

	bad := echo()
	bad.Memory = 5
	_, err = c.Start(ctx(t), bad)
	wantError(t, err, http.StatusBadRequest, task.EINVALID, "Task.Memory")

	// A Completed task cannot be restarted.
	tk, err := c.Start(ctx(t), echo())
	if err != nil {
		t.Fatal(err)
	}
	h.waitState(t, tk.ID, task.Running)
	if err := c.Stop(ctx(t), tk.ID); err != nil {
		t.Fatal(err)
	}
	h.waitState(t, tk.ID, task.Completed)
	_, err = c.Start(ctx(t), tk)
	wantError(t, err, http.StatusConflict, task.ECONFLICT, tk.ID.String(), "Completed")

	// A runtime that does not answer makes the worker unready, and says why.
	if err := c.Ready(ctx(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	h.rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "ping docker: Cannot connect to the Docker daemon"))
	err = c.Ready(ctx(t))
	for deadline := time.Now().Add(waitTimeout); err == nil && time.Now().Before(deadline); err = c.Ready(ctx(t)) {
		time.Sleep(2 * time.Millisecond) // until the worker's next ping
	}
	wantError(t, err, http.StatusServiceUnavailable, task.EUNAVAILABLE,
		"the container runtime does not answer", "Cannot connect to the Docker daemon")
	if err := c.Healthz(ctx(t)); err != nil {
		t.Errorf("Healthz with the runtime down: got %v, want nil", err)
	}

	// A route the worker does not serve yet.
	_, err = c.Metrics(ctx(t))
	wantError(t, err, http.StatusNotFound, task.ENOTFOUND, "no route for GET /metrics")
}

// TestStatusKinds checks the mapping of every status to a kind, and of answers that are not the
// worker's JSON errors.
func TestStatusKinds(t *testing.T) {
	tests := []struct {
		status int
		body   string
		code   task.Code
		msg    string
	}{
		{400, `{"HTTPStatusCode":400,"Message":"Task.Image: is required"}`, task.EINVALID, "Task.Image: is required"},
		{401, `{"HTTPStatusCode":401,"Message":"missing or bad token"}`, task.EFORBIDDEN, "missing or bad token"},
		{403, `{"HTTPStatusCode":403,"Message":"Task.Privileged: not allowed"}`, task.EFORBIDDEN, "Task.Privileged: not allowed"},
		{404, `{"HTTPStatusCode":404,"Message":"task x not found"}`, task.ENOTFOUND, "task x not found"},
		{405, `{"HTTPStatusCode":405,"Message":"method PUT not allowed on /tasks"}`, task.EINVALID, "method PUT not allowed on /tasks"},
		{409, `{"HTTPStatusCode":409,"Message":"task x is Completed"}`, task.ECONFLICT, "task x is Completed"},
		{413, `{"HTTPStatusCode":413,"Message":"request body is larger than 1048576 bytes"}`, task.EINVALID, "request body is larger"},
		{500, `{"HTTPStatusCode":500,"Message":"internal error"}`, task.EINTERNAL, "internal error"},
		{503, `{"HTTPStatusCode":503,"Message":"the worker's queue is full"}`, task.EUNAVAILABLE, "the worker's queue is full"},
		{502, "<html><body>Bad Gateway</body></html>", task.EUNAVAILABLE, " is not a cube worker (it answered 502 Bad Gateway, text/html)"},
		{404, "404 page not found\n", task.ENOTFOUND, " is not a cube worker (it answered 404 Not Found, text/plain)"},
		{401, "Unauthorized\n", task.EFORBIDDEN, "Unauthorized (HTTP 401)"},
		{500, "", task.EINTERNAL, "the worker answered 500 Internal Server Error"},
		{408, `{"HTTPStatusCode":408,"Message":"the request body did not arrive within 1m0s"}`, task.EUNAVAILABLE, "did not arrive"},
		{431, "", task.EINVALID, "the worker answered 431 Request Header Fields Too Large"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(tt.body, "{") {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.List(ctx(t))
			wantError(t, err, tt.status, tt.code)
			if err.Error() != tt.msg && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message: got %q, want %q", err.Error(), tt.msg)
			}
			if got, want := client.IsUnauthorized(err), tt.status == 401; got != want {
				t.Errorf("IsUnauthorized: got %v, want %v", got, want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(ctx(t))
	if task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Fatalf("List of a closed port: got %v (kind %q), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
	if want := "cannot reach the worker at " + addr + ": connection refused"; err.Error() != want {
		t.Errorf("message: got %q, want %q", err.Error(), want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(err, ECONNREFUSED): got false, want true")
	}

	// A cancelled context is the context's error, not the worker's absence.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.List(cctx); !errors.Is(err, context.Canceled) || task.ErrorCode(err) == task.EUNAVAILABLE {
		t.Errorf("List with a cancelled context: got %v, want context.Canceled", err)
	}
}

func TestNewAddresses(t *testing.T) {
	tests := []struct {
		in, want string
		opts     []client.Option
	}{
		{"127.0.0.1:5556", "http://127.0.0.1:5556", nil},
		{"http://127.0.0.1:5556/", "http://127.0.0.1:5556", nil},
		{"https://worker.example:443", "https://worker.example:443", nil},
		{"worker.example:5556", "https://worker.example:5556", []client.Option{client.WithTLSConfig(&tls.Config{})}},
		{"http://10.0.0.1:5556/cube", "http://10.0.0.1:5556/cube", nil},
	}
	for _, tt := range tests {
		c, err := client.New(tt.in, tt.opts...)
		if err != nil {
			t.Errorf("New(%q): %v", tt.in, err)
			continue
		}
		if got := c.URL(); got != tt.want {
			t.Errorf("New(%q).URL(): got %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "ftp://x:1", "http://", "::::", "http://h:1/?q=1"} {
		if _, err := client.New(bad); err == nil {
			t.Errorf("New(%q): got nil error, want one", bad)
		}
	}
	if _, err := client.New("h:1", client.WithCAFile("/no/such/ca.pem")); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Errorf("New with a missing CA file: got %v, want an error about the CA file", err)
	}
	if _, err := client.New("h:1", client.WithClientCert("cert.pem", "")); err == nil {
		t.Errorf("New with a certificate and no key: got nil error, want one")
	}
}

// TestTokens checks the client's token against the API's own authentication.
func TestTokens(t *testing.T) {
	const full, read = "full-access-token-0123456789", "read-only-token-0123456789"
	h := newHarnessWith(t, api.Options{Token: full, ReadToken: read})
	url := h.c.URL()

	// No token: 401, but liveness stays open.
	_, err := h.c.List(ctx(t))
	wantError(t, err, http.StatusUnauthorized, task.EFORBIDDEN, "this worker needs a bearer token")
	if !client.IsUnauthorized(err) {
		t.Errorf("IsUnauthorized: got false, want true")
	}
	if err := h.c.Healthz(ctx(t)); err != nil {
		t.Errorf("Healthz without a token: got %v, want nil", err)
	}

	wrong, _ := client.New(url, client.WithToken("not-the-token-0123456789"))
	_, err = wrong.List(ctx(t))
	wantError(t, err, http.StatusUnauthorized, task.EFORBIDDEN, "the bearer token is not valid for this worker")

	// The read-only token may read, not stop.
	ro, _ := client.New(url, client.WithToken(read))
	if _, err := ro.List(ctx(t)); err != nil {
		t.Errorf("List with the read-only token: %v", err)
	}
	_, err = ro.Start(ctx(t), echo())
	wantError(t, err, http.StatusForbidden, task.EFORBIDDEN, "the read-only token may only GET")
	if client.IsUnauthorized(err) {
		t.Errorf("IsUnauthorized of a 403: got true, want false")
	}

	rw, _ := client.New(url, client.WithToken(full))
	tk, err := rw.Start(ctx(t), echo())
	if err != nil {
		t.Fatalf("Start with the full token: %v", err)
	}
	if err := rw.Stop(ctx(t), tk.ID); err != nil {
		t.Errorf("Stop with the full token: %v", err)
	}
}
