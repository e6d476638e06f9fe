package api

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/go-chi/chi/v5"
)

// maxSample is the longest a profile may sample for: beyond it the request is refused, so that
// no request holds the profiler (or a connection) for longer.
const maxSample = 10 * time.Minute

// profileBuild is what a sampled profile may take, beyond its sampling and the request timeout,
// to be made and written: a heap or allocs delta is built, symbolised and compressed only once
// the sampling is over, which on a loaded machine takes a while of its own.
const profileBuild = 10 * time.Second

// profilingRoutes serves net/http/pprof's handlers under /debug/pprof/, as Nomad's enable_debug
// and the kubelet's profiling handler do: the index, the named profiles (heap, goroutine, allocs,
// block, mutex, threadcreate; each as a delta over ?seconds=N when asked), a CPU profile
// (profile?seconds=N), an execution trace (trace?seconds=N), the command line and symbol lookup.
// They are behind the API's authentication like every other route.
func (s *Server) profilingRoutes(r chi.Router) {
	r.Get("/", pprof.Index)
	r.Get("/cmdline", pprof.Cmdline)
	r.Get("/profile", s.sampled(pprof.Profile, 30*time.Second, false))
	r.Get("/symbol", pprof.Symbol)
	r.Post("/symbol", pprof.Symbol)
	r.Get("/trace", s.sampled(pprof.Trace, time.Second, true))
	// Index serves the named profile of the path's last element, as a delta over ?seconds=N.
	r.Get("/{profile}", s.sampled(pprof.Index, 0, false))
}

// sampled serves a handler that samples for its request's seconds parameter before it answers
// (def when there is none or it is not a positive number, as the handler reads it: whole
// seconds, or any number for the trace): the request's deadlines are moved past that, so that
// a 60 s CPU profile is not cut off by the request timeout. A request for more than maxSample
// is refused.
func (s *Server) sampled(h http.HandlerFunc, def time.Duration, fractional bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := def
		if fractional {
			if n, err := strconv.ParseFloat(r.FormValue("seconds"), 64); err == nil && n > 0 {
				d = time.Duration(min(n, maxSample.Seconds()+1) * float64(time.Second))
			}
		} else if n, err := strconv.ParseInt(r.FormValue("seconds"), 10, 64); err == nil && n > 0 {
			d = time.Duration(min(n, int64(maxSample.Seconds())+1)) * time.Second
		}
		if d > maxSample {
			s.error(w, r, task.Errorf(task.EINVALID, "seconds: %s must be at most %v", r.FormValue("seconds"), maxSample))
			return
		}
		if d > 0 {
			if err := liftDeadlines(w, d+profileBuild+s.requestTimeout); err != nil && !errors.Is(err, http.ErrNotSupported) {
				s.log.Debug("lift deadlines", "err", err)
			}
		}
		h(w, r)
	}
}
