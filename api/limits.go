package api

import (
	"net/http"
	"time"
)

// deadlines bounds how long reading a request's body and writing its answer may take, so that a
// client that sends or reads slowly cannot hold a connection and its goroutine for long: the body
// must arrive within the request timeout, and the answer be written within another (so that a
// body that came too late still gets its 408). They are
// per request rather than the HTTP server's ReadTimeout and WriteTimeout, which would cut every
// streaming answer (followed logs, event streams) short: a streaming handler calls liftDeadlines.
//
// The header is bounded before any handler runs, by the server's ReadHeaderTimeout.
func (s *Server) deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now() // the network compares deadlines with the real clock, not Options.Now
		// Recorders in tests support neither; a real connection supports both.
		_ = rc.SetReadDeadline(now.Add(s.requestTimeout))
		_ = rc.SetWriteDeadline(now.Add(2 * s.requestTimeout))
		next.ServeHTTP(w, r)
	})
}

// liftDeadlines removes the read deadline that deadlines set, and moves the write deadline to
// d from now, for a handler that streams its answer for longer than a request may take. Such a
// handler calls it again before each write (or batch of writes), so that a client that stops
// reading is still cut off after d, and once more just before it returns, because net/http
// writes the end of the answer after that. It must first be called before the request's read
// deadline passes: when that deadline passes, net/http cancels the request's context.
func liftDeadlines(w http.ResponseWriter, d time.Duration) error {
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	return rc.SetWriteDeadline(time.Now().Add(d)) // the real clock, as in deadlines
}
