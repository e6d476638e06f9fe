// Package testworker runs a worker in-process for one test: on the fake runtime of workertest or on
// any other worker.Runtime (the Docker adapter), with the test's config tweaks, optionally served
// over an httptest.Server, with a client of it. It is the one harness the tests of the packages
// above the worker (api, api/client, internal/metrics, cmd/cube) start their workers with.
//
// It lives below workertest rather than in it because it imports package worker, and worker's
// own in-package tests import workertest: workertest itself cannot import worker.
package testworker

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
)

// ReadyTimeout is how long Start waits for the worker to be ready unless Options.ReadyWithin
// says otherwise.
const ReadyTimeout = 5 * time.Second

// Options say what worker Start runs. The zero value is a worker on a new fake runtime, named
// after the test, logging at debug level to the test's output, not served.
type Options struct {
	// Runtime is what the worker drives; default a new *workertest.Runtime (Harness.Fake).
	Runtime worker.Runtime
	// Config is the worker's config. Its Name defaults to the test's name, its Logger to a
	// debug-level logger on the test's output, its PingInterval to 10ms (so that a runtime that
	// stops or starts answering is seen at once).
	Config worker.Config
	// Setup, when set, runs after the worker is made and before it runs (to track it, say).
	Setup func(h *Harness)
	// Serve, when set, is the handler served over an httptest.Server (Harness.URL) until the test
	// ends: the API around h.Worker, usually.
	Serve func(h *Harness) http.Handler
	// ReadyWithin bounds the wait for the worker to be ready; default ReadyTimeout.
	ReadyWithin time.Duration
}

// Harness is a running worker, and its server when Options.Serve was set.
type Harness struct {
	Fake   *workertest.Runtime // the fake runtime; nil when Options.Runtime was given
	Worker *worker.Worker
	Logger *slog.Logger     // the worker's logger
	Server *httptest.Server // nil without Options.Serve
	URL    string           // the server's base URL, http://127.0.0.1:port; "" without a server
	Addr   string           // the server's host:port; "" without a server

	tb   testing.TB
	stop func() // stops the worker: workertest.Run's
	once sync.Once
}

// Start runs a worker as opts say until the test ends (or Stop), and waits until it is ready:
// it has recovered its state and its runtime answers. It fails the test when the worker is not
// ready in time, or when Run fails. Its cleanup closes the server, then stops the worker and
// waits for Run to return (up to workertest.StopTimeout).
func Start(tb testing.TB, opts Options) *Harness {
	tb.Helper()
	h := &Harness{tb: tb}
	rt := opts.Runtime
	if rt == nil {
		h.Fake = workertest.New()
		rt = h.Fake
	}
	cfg := opts.Config
	if cfg.Name == "" {
		cfg.Name = tb.Name()
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(tb)
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 10 * time.Millisecond
	}
	h.Logger = cfg.Logger
	h.Worker = worker.New(rt, cfg)
	if opts.Setup != nil {
		opts.Setup(h)
	}
	h.stop = workertest.Run(tb, h.Worker)
	tb.Cleanup(h.Stop)
	within := opts.ReadyWithin
	if within == 0 {
		within = ReadyTimeout
	}
	workertest.WaitReady(tb, h.Worker, within)
	if opts.Serve != nil {
		h.Server = httptest.NewServer(opts.Serve(h))
		tb.Cleanup(h.Server.Close)
		h.URL = h.Server.URL
		h.Addr = strings.TrimPrefix(h.URL, "http://")
	}
	return h
}

// Stop closes the server, stops the worker and waits for Run to return, failing the test when
// it fails or does not return within workertest.StopTimeout. It is safe to call twice; the
// test's cleanup calls it.
func (h *Harness) Stop() {
	h.once.Do(func() {
		if h.Server != nil {
			h.Server.Close()
		}
		h.stop()
	})
}

// Client returns a client of the harness's server with opts (after the server's own HTTP
// client, which opts may replace). It fails the test without a server.
func (h *Harness) Client(tb testing.TB, opts ...client.Option) *client.Client {
	tb.Helper()
	if h.Server == nil {
		tb.Fatal("testworker: Client needs a server (Options.Serve)")
	}
	c, err := client.New(h.URL, append([]client.Option{client.WithHTTPClient(h.Server.Client())}, opts...)...)
	if err != nil {
		tb.Fatalf("client.New(%s): %v", h.URL, err)
	}
	return c
}

// Logger returns a debug-level logger on the test's output.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Logs is a log destination that goroutines may share, for a test that reads what was logged.
type Logs struct {
	mu sync.Mutex
	b  strings.Builder
}

var _ io.Writer = (*Logs)(nil)

// Write appends p.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a text logger at info level writing to l.
func (l *Logs) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
