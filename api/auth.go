package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// access is what a request's credentials allow.
type access int

const (
	accessNone access = iota
	accessRead        // GET and HEAD
	accessFull        // every route
)

// authenticator checks bearer tokens. It keeps only their SHA-256 digests and compares digests
// in constant time, so that neither the content nor the length of a token leaks through timing.
type authenticator struct {
	full, read       [sha256.Size]byte
	hasFull, hasRead int // 1 when the token is set
}

func newAuthenticator(full, read string) authenticator {
	var a authenticator
	if full != "" {
		a.full, a.hasFull = sha256.Sum256([]byte(full)), 1
	}
	if read != "" {
		a.read, a.hasRead = sha256.Sum256([]byte(read)), 1
	}
	return a
}

// enabled reports whether the API asks for a token at all.
func (a authenticator) enabled() bool { return a.hasFull == 1 || a.hasRead == 1 }

// check returns what token grants. Both digests are always compared.
func (a authenticator) check(token string) access {
	d := sha256.Sum256([]byte(token))
	full := a.hasFull & subtle.ConstantTimeCompare(d[:], a.full[:])
	read := a.hasRead & subtle.ConstantTimeCompare(d[:], a.read[:])
	switch {
	case full == 1:
		return accessFull
	case read == 1:
		return accessRead
	}
	return accessNone
}

// openPath is the one route served without a token: liveness, for probes that carry none.
const openPath = "/healthz"

// authenticate lets a request through when its bearer token allows it. Without a valid token
// the answer is 401 with a WWW-Authenticate challenge; a read-only token on a route that is not
// GET or HEAD gets 403.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if !s.auth.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == openPath {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cube"`)
			s.error(w, r, httpErrorf(http.StatusUnauthorized, "this worker needs a bearer token: send the header Authorization: Bearer TOKEN"))
			return
		}
		switch s.auth.check(token) {
		case accessFull:
			next.ServeHTTP(w, r)
		case accessRead:
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				next.ServeHTTP(w, r)
				return
			}
			s.log.Info("read-only token used on a mutating route", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			s.error(w, r, httpErrorf(http.StatusForbidden, "the read-only token may only GET; %s %s needs the full-access token", r.Method, r.URL.Path))
		default:
			s.log.Info("invalid bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="cube", error="invalid_token"`)
			s.error(w, r, httpErrorf(http.StatusUnauthorized, "the bearer token is not valid for this worker"))
		}
	})
}

// bearerToken returns the token of the request's "Authorization: Bearer TOKEN" header, and false
// when there is none. The scheme is case-insensitive (RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
