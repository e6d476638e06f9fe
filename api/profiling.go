package api

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
)

// profilingRoutes serves net/http/pprof's handlers under /debug/pprof/, as Nomad's enable_debug
// and the kubelet's profiling handler do: the index, the named profiles (heap, goroutine, allocs,
// block, mutex, threadcreate), a CPU profile (profile?seconds=N), an execution trace
// (trace?seconds=N), the command line and symbol lookup. They are behind the API's
// authentication like every other route.
func (s *Server) profilingRoutes(r chi.Router) {
	r.Get("/", pprof.Index)
	r.Get("/cmdline", pprof.Cmdline)
	r.Get("/profile", s.sampled(pprof.Profile, 30*time.Second))
	r.Get("/symbol", pprof.Symbol)
	r.Post("/symbol", pprof.Symbol)
	r.Get("/trace", s.sampled(pprof.Trace, time.Second))
	r.Get("/{profile}", pprof.Index) // Index serves the named profile of the path's last element
}

// sampled serves a handler that samples for its request's seconds parameter (def when there is
// none) before it answers: the request's deadlines are moved past that, so that a 60 s CPU
// profile is not cut off by the request timeout. The handler itself refuses a bad seconds.
func (s *Server) sampled(h http.HandlerFunc, def time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := def
		if n, err := strconv.ParseFloat(r.FormValue("seconds"), 64); err == nil && n > 0 && n < 1e6 {
			d = time.Duration(n * float64(time.Second))
		}
		if err := liftDeadlines(w, d+s.requestTimeout); err != nil && !errors.Is(err, http.ErrNotSupported) {
			s.log.Debug("lift deadlines", "err", err)
		}
		h(w, r)
	}
}
