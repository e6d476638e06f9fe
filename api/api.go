// Package api serves a worker over HTTP: chi routes, thin handlers, JSON in and out, and the one
// place where errors become HTTP statuses.
//
//	POST   /tasks            accept a task event: start a new task or restart a known one (201)
//	GET    /tasks            every task (200, a JSON array)
//	GET    /tasks/{taskID}   one task (200; 404 unknown; 400 not a UUID)
//	DELETE /tasks/{taskID}   stop a task: container removed, task Completed unless it had ended (204)
//	DELETE /tasks/{taskID}?remove=true   remove a task: stopped, container removed, task forgotten (204, then 404)
//	GET    /tasks/{taskID}/logs   the task's output as text; follow, tail, since, timestamps (200)
//	GET    /tasks/{taskID}/stats  one sample of the task's CPU, memory, network and block I/O (200)
//	GET    /stats            node stats in the shape the book's manager reads (200)
//	GET    /events           task changes as Server-Sent Events; Last-Event-ID resumes (200)
//	GET    /metrics          Prometheus metrics, when Options.Metrics is set (200)
//	GET    /healthz          liveness: the process serves (200)
//	GET    /readyz           readiness: the container runtime answers (200, or 503 with the reason)
//	GET    /version          the worker's version, commit and name (200)
//	GET    /openapi.json     this API's contract, an OpenAPI 3 document (api/openapi.json)
//	GET    /debug/pprof/...  Go's runtime profiles (net/http/pprof), when Options.Profiling is set
//
// Errors are JSON objects {"HTTPStatusCode": N, "Message": "..."} that say what is wrong and where.
//
// With a token configured, every route but /healthz needs "Authorization: Bearer TOKEN": the
// full-access token for every route, the read-only token for GET and HEAD only. A request
// without a valid token gets 401, a read-only token on a mutating route 403.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/worker"
	"github.com/go-chi/chi/v5"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// DefaultRequestTimeout is Options.RequestTimeout's default.
const DefaultRequestTimeout = time.Minute

// Options configure the API. Zero fields take the defaults noted.
type Options struct {
	Logger *slog.Logger // default: slog.Default()
	// Token is the bearer token that grants full access. With Token and ReadToken both empty the
	// API asks for no token, which is only safe on a loopback address.
	Token string
	// ReadToken, when set, is a bearer token that grants read-only access: GET and HEAD.
	ReadToken string
	// RequestTimeout bounds reading one request's body, and then again writing its answer;
	// default DefaultRequestTimeout. The HTTP server's own ReadTimeout and WriteTimeout should
	// stay 0, so that streaming answers can lift these per-request deadlines (see liftDeadlines).
	RequestTimeout time.Duration
	// Metrics, when set, serves GET /metrics. The API only mounts it; what it serves is the
	// caller's (cmd wires the Prometheus handler of internal/metrics).
	Metrics http.Handler
	// Observe, when set, hears of every answered request: its method, the route pattern that
	// served it ("/tasks/{taskID}"; "" when no route matched), its status and how long it took.
	// A streaming answer is heard of when it ends.
	Observe func(method, route string, status int, d time.Duration)
	// EventKeepAlive is how often GET /events sends a comment on an idle stream, so that proxies
	// and clients see the connection alive; default DefaultEventKeepAlive.
	EventKeepAlive time.Duration
	// StreamContext, when set, ends every streaming answer (followed logs, event streams) when
	// it is done. A server that shuts down cancels it first, so that draining does not wait on
	// clients that never hang up. Default: streams end only with their requests.
	StreamContext context.Context
	// Version is what GET /version answers: the worker's build and name.
	Version Version
	// Profiling, when set, serves Go's runtime profiles under /debug/pprof/ (net/http/pprof),
	// behind the same authentication as every other route. Off, those paths are 404.
	Profiling bool
	// Now is the clock for the times the API decides with (the start of a logs request's
	// "since=10m"); default time.Now. Connection deadlines and the durations it logs and
	// observes stay on time.Now: the network compares deadlines with the real clock, and a
	// latency is a measurement, not a decision.
	Now func() time.Time
}

// Version is the body of GET /version: which build of cube the worker runs, and its name.
type Version struct {
	Version string // the release, or "dev"
	Commit  string // the commit it was built from, or "unknown"
	Name    string // the worker's name
}

// Server holds what the handlers need.
type Server struct {
	w              *worker.Worker
	listWriters    sync.Pool // of *listWriter: the buffers GET /tasks and one task's answers are written with
	log            *slog.Logger
	auth           authenticator
	requestTimeout time.Duration
	metrics        http.Handler
	observeFn      func(method, route string, status int, d time.Duration)
	keepAlive      time.Duration
	streams        context.Context
	version        Version
	profiling      bool
	now            func() time.Time
}

// New returns the HTTP handler serving w.
func New(w *worker.Worker, opts Options) http.Handler {
	s := &Server{
		w:              w,
		log:            opts.Logger,
		auth:           newAuthenticator(opts.Token, opts.ReadToken),
		requestTimeout: opts.RequestTimeout,
		metrics:        opts.Metrics,
		observeFn:      opts.Observe,
		keepAlive:      opts.EventKeepAlive,
		streams:        opts.StreamContext,
		version:        opts.Version,
		profiling:      opts.Profiling,
		now:            opts.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.keepAlive <= 0 {
		s.keepAlive = DefaultEventKeepAlive
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.requestTimeout <= 0 {
		s.requestTimeout = DefaultRequestTimeout
	}
	return s.routes()
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	// Authentication comes before routing, so that a client without a token learns nothing,
	// not even which routes exist.
	r.Use(s.observe, s.recoverer, s.deadlines, s.logRequests, s.authenticate)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, httpErrorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, httpErrorf(http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
	})

	r.Route("/tasks", func(r chi.Router) {
		r.Post("/", s.handleSubmit)
		r.Get("/", s.handleList)
		r.Get("/{taskID}", s.handleGet)
		r.Delete("/{taskID}", s.handleStop)
		r.Get("/{taskID}/logs", s.handleLogs)
		r.Get("/{taskID}/stats", s.handleTaskStats)
	})
	r.Get("/stats", s.handleStats)
	r.Get("/events", s.handleEvents)
	if s.metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.metrics)
	}
	r.Get("/healthz", s.handleHealthz)
	r.Get("/readyz", s.handleReadyz)
	r.Get("/version", s.handleVersion)
	r.Get("/openapi.json", s.handleOpenAPI)
	if s.profiling {
		r.Route("/debug/pprof", s.profilingRoutes)
	}
	return r
}
