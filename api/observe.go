package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// DefaultEventKeepAlive is Options.EventKeepAlive's default.
const DefaultEventKeepAlive = 15 * time.Second

// logOptions reads the query of GET /tasks/{taskID}/logs: follow, tail (N or all; 0 sends none
// of the earlier lines), since (RFC 3339, or a Go duration before now) and timestamps.
func logOptions(r *http.Request, now time.Time) (task.LogOptions, error) {
	q := r.URL.Query()
	var opts task.LogOptions
	var err error
	if opts.Follow, err = boolParam(q.Get("follow"), "follow"); err != nil {
		return opts, err
	}
	if opts.Timestamps, err = boolParam(q.Get("timestamps"), "timestamps"); err != nil {
		return opts, err
	}
	switch tail := q.Get("tail"); tail {
	case "", "all":
	default:
		n, err := strconv.Atoi(tail)
		if err != nil || n < 0 {
			return opts, task.Errorf(task.EINVALID, "tail: %q is not a number of lines or all", tail)
		}
		opts.Tail = n
		if n == 0 {
			opts.Tail = -1 // none of the earlier lines
		}
	}
	if since := q.Get("since"); since != "" {
		if t, err := time.Parse(time.RFC3339Nano, since); err == nil {
			opts.Since = t
		} else if d, err := time.ParseDuration(since); err == nil && d >= 0 {
			opts.Since = now.Add(-d)
		} else {
			return opts, task.Errorf(task.EINVALID, "since: %q is neither an RFC 3339 time nor a duration such as 10m", since)
		}
	}
	return opts, nil
}

func boolParam(s, name string) (bool, error) {
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, task.Errorf(task.EINVALID, "%s: %q is not true or false", name, s)
	}
	return b, nil
}

// handleLogs streams the task's output as plain text, flushing as it comes. The answer may last
// longer than a request may (a followed task, a long output), so the per-request deadlines are
// lifted, and each write must go out within the request timeout: a client that takes nothing for
// that long is cut off. An answer that cannot be finished (the client too slow, the runtime's
// stream broken, the worker shutting down) is aborted (http.ErrAbortHandler: the connection is
// closed without the end of the chunked body), so that the client sees an error rather than a
// clean end.
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	s.lift(w)
	defer s.lift(w)
	id, err := parseUUID("taskID", chi.URLParam(r, "taskID"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	opts, err := logOptions(r, s.now())
	if err != nil {
		s.error(w, r, err)
		return
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	rc, err := s.w.Logs(ctx, id, opts)
	if err != nil {
		s.error(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	s.flush(w)
	buf := make([]byte, 32<<10)
	sent := 0
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			lifted := time.Now() // the network's clock, as lift's
			s.lift(w)
			_, werr := w.Write(buf[:n])
			if werr == nil {
				werr = s.flushErr(w)
			}
			switch {
			// A write that fails once the deadline lift set has passed failed for it, whatever
			// error the server passes on: net/http closes the connection on a failed chunk write,
			// and a write or flush after that reports the closed connection, not the deadline.
			case werr != nil && (errors.Is(werr, os.ErrDeadlineExceeded) || time.Since(lifted) >= s.requestTimeout):
				s.log.Warn("task logs: the client took no data for the request timeout; cut off",
					"task", id, "timeout", s.requestTimeout, "bytes_sent", sent)
				panic(http.ErrAbortHandler)
			case werr != nil:
				return // the client went away
			}
			sent += n
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			if r.Context().Err() != nil {
				return // the client went away: no one to tell
			}
			if ctx.Err() != nil {
				s.log.Info("task logs cut short: the worker is shutting down", "task", id, "bytes_sent", sent)
			} else {
				s.log.Warn("task logs cut short", "task", id, "err", err, "bytes_sent", sent)
			}
			panic(http.ErrAbortHandler) // the client sees the answer break, not end
		}
	}
}

// flushErr sends what was written so far to the client, and returns why it could not.
func (s *Server) flushErr(w http.ResponseWriter) error {
	if err := http.NewResponseController(w).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (s *Server) handleTaskStats(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID("taskID", chi.URLParam(r, "taskID"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	st, err := s.w.TaskStats(r.Context(), id)
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.encode(w, r, http.StatusOK, st)
}

// handleEvents streams the worker's task changes as Server-Sent Events: each change as a message
// with its Seq as id, event "task" and the change as JSON data. With Last-Event-ID: N it first
// replays the kept changes after N, or, when they are not all kept (N is from before a restart of
// the worker, or too old), sends one message of event "reset" instead, which tells the client to
// read the tasks again; without it, it opens with a lone "id: <newest Seq>" so that a client can
// resume from there. A comment keeps an idle connection alive. When the worker cuts
// the subscription off (the client fell behind), the answer ends, and the client reconnects with
// the last id it saw.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.lift(w)
	defer s.lift(w)
	var after uint64
	replay := false
	if h, ok := r.Header["Last-Event-Id"]; ok {
		n, err := strconv.ParseUint(strings.TrimSpace(h[0]), 10, 64)
		if err != nil {
			s.error(w, r, task.Errorf(task.EINVALID, "Last-Event-ID: %q is not an event number", h[0]))
			return
		}
		after, replay = n, true
	}
	if !replay {
		after = s.w.LastChange()
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	backlog, changes, unsubscribe := s.w.Changes(after)
	defer unsubscribe()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // a proxy in front must not hold messages back
	w.WriteHeader(http.StatusOK)
	if !replay {
		fmt.Fprintf(w, "id: %d\n\n", after)
	}
	s.flush(w)
	for _, c := range backlog {
		if !s.sendChange(w, c) {
			return
		}
	}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return // fell behind: the client reconnects and catches up from the backlog
			}
			if !s.sendChange(w, c) {
				return
			}
		case <-keepAlive.C:
			s.lift(w)
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
			s.flush(w)
		}
	}
}

// streamContext returns the context of a streaming answer: the request's, ended also when
// Options.StreamContext is done.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	if s.streams == nil {
		return ctx, cancel
	}
	stop := context.AfterFunc(s.streams, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// sendChange writes one change as an SSE message and flushes it. It reports whether the client
// can still be written to.
func (s *Server) sendChange(w http.ResponseWriter, c task.Change) bool {
	data, err := json.Marshal(c)
	if err != nil {
		s.log.Error("encode a task change", "seq", c.Seq, "err", err)
		return true
	}
	event := "task"
	if c.Type == task.ChangeReset {
		event = "reset"
	}
	s.lift(w)
	if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", c.Seq, event, data); err != nil {
		return false
	}
	s.flush(w)
	return true
}

// lift lifts the per-request deadlines for a streaming answer (see liftDeadlines): each write
// must then go out within the request timeout. A writer that has no deadlines (a test's
// recorder) needs none lifted.
func (s *Server) lift(w http.ResponseWriter) {
	if err := liftDeadlines(w, s.requestTimeout); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Debug("lift deadlines", "err", err)
	}
}

// flush sends what was written so far to the client.
func (s *Server) flush(w http.ResponseWriter) {
	if err := http.NewResponseController(w).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Debug("flush", "err", err)
	}
}

// observe tells Options.Observe about every answered request, with the route pattern that
// served it (never the raw path, whose task IDs would make a label per task), "" when no route
// matched.
func (s *Server) observe(next http.Handler) http.Handler {
	if s.observeFn == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now() // a latency, measured on the real clock (see Options.Now)
		count := func() {
			route := ""
			if rc := chi.RouteContext(r.Context()); rc != nil {
				route = rc.RoutePattern()
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK // nothing written: net/http answers 200
			}
			s.observeFn(r.Method, route, status, time.Since(start))
		}
		defer func() {
			// The recoverer answers other panics; an answer broken off on purpose (a logs answer
			// cut short) is counted with the status it began with, and broken off still.
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					count()
				}
				panic(v)
			}
		}()
		next.ServeHTTP(ww, r)
		count()
	})
}
