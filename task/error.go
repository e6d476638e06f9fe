package task

import (
	"errors"
	"fmt"
)

// Code is the kind of an error. Every layer speaks these few kinds; the API maps them to HTTP
// statuses in one place, and adapters translate their own errors into them.
type Code string

// The error kinds.
const (
	EINVALID     Code = "invalid"     // the request is wrong; retrying it unchanged will not help
	ENOTFOUND    Code = "not_found"   // the thing asked for does not exist
	ECONFLICT    Code = "conflict"    // the request clashes with the current state
	EFORBIDDEN   Code = "forbidden"   // the request asks for something this worker does not allow
	EUNAVAILABLE Code = "unavailable" // a dependency (the Docker Engine) did not answer; try later
	EINTERNAL    Code = "internal"    // a bug or an unexpected failure
)

// Error is an error with a kind and a message fit for a client. Err, when set, is the underlying
// cause; it is logged but never shown to clients.
type Error struct {
	Code    Code
	Message string
	Err     error
}

// Error returns the message, followed by the cause when there is one.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of the given kind whose message is msg and whose cause is err.
func Wrap(code Code, err error, msg string) *Error {
	return &Error{Code: code, Message: msg, Err: err}
}

// ErrorCode returns the kind of the first *Error in err's chain, EINTERNAL for any other error,
// and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-facing message of the first *Error in err's chain, including
// the messages (but not the causes) of *Errors it wraps, or "internal error" for any other error.
func ErrorMessage(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return "internal error"
	}
	var inner *Error
	if e.Err != nil && errors.As(e.Err, &inner) {
		return e.Message + ": " + ErrorMessage(inner)
	}
	return e.Message
}
