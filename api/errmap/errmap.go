// Package errmap is the one table between task error kinds and HTTP statuses, read in both
// directions: the API answers an error of a kind with the kind's status (Status), and its client
// reads a status back as the kind the API maps to it (Code). It imports only task, so that the
// client, which carries no server, may import it.
package errmap

import (
	"net/http"

	"github.com/cube-orchestrator/cube/task"
)

// kinds is the table: each error kind and the status the API answers it with. No status stands
// twice, so that Code reads every row back as its kind.
var kinds = []struct {
	code   task.Code
	status int
}{
	{task.EINVALID, http.StatusBadRequest},
	{task.ENOTFOUND, http.StatusNotFound},
	{task.ECONFLICT, http.StatusConflict},
	{task.EFORBIDDEN, http.StatusForbidden},
	{task.EUNAVAILABLE, http.StatusServiceUnavailable},
	{task.EINTERNAL, http.StatusInternalServerError},
}

// others are the statuses that no kind maps to but that mean one: the API's 401 (no token, or a
// wrong one) refuses as a 403 does; 408 and 429 say "later", as do a proxy's 502 and 504.
var others = map[int]task.Code{
	http.StatusUnauthorized:    task.EFORBIDDEN,
	http.StatusRequestTimeout:  task.EUNAVAILABLE,
	http.StatusTooManyRequests: task.EUNAVAILABLE,
	http.StatusBadGateway:      task.EUNAVAILABLE,
	http.StatusGatewayTimeout:  task.EUNAVAILABLE,
}

// Status returns the HTTP status the API answers an error of kind code with, and 500 for a
// kind the table does not know.
func Status(code task.Code) int {
	for _, k := range kinds {
		if k.code == code {
			return k.status
		}
	}
	return http.StatusInternalServerError
}

// Code returns the error kind an HTTP error status stands for: the kind the API maps to it, or
// for a status no kind maps to the nearest one (see others); any other 4xx is the request's
// fault (EINVALID), and anything else EINTERNAL.
func Code(status int) task.Code {
	for _, k := range kinds {
		if k.status == status {
			return k.code
		}
	}
	if code, ok := others[status]; ok {
		return code
	}
	if status >= 400 && status < 500 {
		return task.EINVALID
	}
	return task.EINTERNAL
}
