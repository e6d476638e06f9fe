// Package api serves a worker over HTTP: chi routes, thin handlers, JSON in and out, and the one
// place where errors become HTTP statuses.
//
//	POST   /tasks            accept a task event: start a new task or restart a known one (201)
//	GET    /tasks            every task (200, a JSON array)
//	GET    /tasks/{taskID}   one task (200; 404 unknown; 400 not a UUID)
//	DELETE /tasks/{taskID}   stop a task: container stopped and removed, task Completed (204)
//	GET    /stats            node stats in the shape the book's manager reads (200)
//	GET    /healthz          liveness: the process serves (200)
//	GET    /readyz           readiness: the container runtime answers (200, or 503 with the reason)
//
// Errors are JSON objects {"HTTPStatusCode": N, "Message": "..."} that say what is wrong and where.
package api

import (
	"log/slog"
	"net/http"

	"github.com/cube-orchestrator/cube/worker"
	"github.com/go-chi/chi/v5"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// Server holds what the handlers need.
type Server struct {
	w   *worker.Worker
	log *slog.Logger
}

// New returns the HTTP handler serving w.
func New(w *worker.Worker, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{w: w, log: log}
	return s.routes()
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer, s.logRequests)
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
	})
	r.Get("/stats", s.handleStats)
	r.Get("/healthz", s.handleHealthz)
	r.Get("/readyz", s.handleReadyz)
	return r
}
