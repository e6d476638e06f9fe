package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cube-orchestrator/cube/api/errmap"
	"github.com/cube-orchestrator/cube/task"
)

// ErrorResponse is the body of every error answer. Its keys are those the book's Cube uses.
type ErrorResponse struct {
	HTTPStatusCode int
	Message        string
}

// httpError is an error that carries its own HTTP status, for the few answers (413, 405, …)
// that no task error kind covers.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func httpErrorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// retryAfter is the Retry-After of a 503 caused by an EUNAVAILABLE error (a full queue, an
// Engine that does not answer): soon, but not at once.
const retryAfter = "1"

// error answers with err as a JSON error, with the status package errmap maps its kind to (the
// one mapping, which the client reads back). Internal errors are logged in full and shown to the
// client only as "internal error". An EUNAVAILABLE error is a 503 with Retry-After.
func (s *Server) error(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var he *httpError
	if errors.As(err, &he) {
		status, msg = he.status, he.msg
	} else if code := task.ErrorCode(err); code != task.EINTERNAL {
		status, msg = errmap.Status(code), task.ErrorMessage(err)
		if code == task.EUNAVAILABLE {
			w.Header().Set("Retry-After", retryAfter)
		}
	}
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	s.encode(w, r, status, ErrorResponse{HTTPStatusCode: status, Message: msg})
}
