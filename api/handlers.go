package api

import (
	"net/http"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
)

// eventRequest is the body of POST /tasks: a task.Event whose UUIDs and timestamp arrive as
// strings, so that a bad one gets an error naming its field.
type eventRequest struct {
	ID        string
	State     task.State
	Timestamp string
	Task      taskRequest
}

// taskRequest is a task.Task whose ID arrives as a string. Its ID field hides the embedded one
// from encoding/json; every other key decodes into the embedded task, and unknown keys are
// still rejected.
type taskRequest struct {
	ID string
	task.Task
}

// event validates the request's own fields and returns the task.Event it asks for. The task's
// spec is validated by the worker.
func (req eventRequest) event() (task.Event, error) {
	var ev task.Event
	var err error
	if ev.ID, err = parseUUID("ID", req.ID); err != nil {
		return ev, err
	}
	if ev.Task.ID, err = parseUUID("Task.ID", req.Task.ID); err != nil {
		return ev, err
	}
	if req.Timestamp != "" {
		if ev.Timestamp, err = time.Parse(time.RFC3339Nano, req.Timestamp); err != nil {
			return ev, task.Errorf(task.EINVALID, "Timestamp: %q is not an RFC 3339 time", req.Timestamp)
		}
	}
	ev.State = req.State
	id := ev.Task.ID
	ev.Task = req.Task.Task
	ev.Task.ID = id
	return ev, nil
}

func parseUUID(field, s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, task.Errorf(task.EINVALID, "%s: is required (a UUID)", field)
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, task.Errorf(task.EINVALID, "%s: %q is not a UUID", field, s)
	}
	return id, nil
}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	var req eventRequest
	if err := decode(w, r, &req); err != nil {
		s.error(w, r, err)
		return
	}
	ev, err := req.event()
	if err != nil {
		s.error(w, r, err)
		return
	}
	t, err := s.w.Submit(ev)
	if err != nil {
		s.error(w, r, err)
		return
	}
	red := t.Redacted()
	s.encodeTask(w, r, http.StatusCreated, &red)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.encodeSeq(w, r, http.StatusOK, func(yield func(v any) error) error {
		return s.w.Each(func(t *task.Task) error {
			t.RegistryAuth = nil // t is Each's copy: redact it in place
			return yield(t)
		})
	})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID("taskID", chi.URLParam(r, "taskID"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	t, err := s.w.Get(id)
	if err != nil {
		s.error(w, r, err)
		return
	}
	red := t.Redacted()
	s.encodeTask(w, r, http.StatusOK, &red)
}

func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID("taskID", chi.URLParam(r, "taskID"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	remove, err := boolParam(r.URL.Query().Get("remove"), "remove")
	if err != nil {
		s.error(w, r, err)
		return
	}
	if remove {
		err = s.w.Remove(id)
	} else {
		err = s.w.Stop(id)
	}
	if err != nil {
		s.error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st, err := s.w.Stats()
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.encode(w, r, http.StatusOK, st)
}

// status is the body of the health endpoints.
type status struct {
	Status string
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	s.encode(w, r, http.StatusOK, status{Status: "ok"})
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	s.encode(w, r, http.StatusOK, s.version)
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if err := s.w.Ready(r.Context()); err != nil {
		s.error(w, r, err)
		return
	}
	s.encode(w, r, http.StatusOK, status{Status: "ready"})
}
