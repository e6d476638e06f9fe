package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

const (
	fullToken = "full-access-token-0123456789abcdef"
	readToken = "read-only-token-0123456789abcdef"
)

// newAuthHarness is newHarness with the API built from opts.
func newAuthHarness(tb testing.TB, opts Options) *harness {
	tb.Helper()
	h := newHarness(tb)
	opts.Logger = testLogger(tb)
	h.h = New(h.w, opts)
	return h
}

func TestAuth(t *testing.T) {
	h := newAuthHarness(t, Options{Token: fullToken, ReadToken: readToken})
	full, read := "Bearer "+fullToken, "Bearer "+readToken

	// A task to read and delete, made with the full-access token.
	rec := h.doAuth(t, http.MethodPost, "/tasks", newEvent().json(t), full)
	wantStatus(t, rec, http.StatusCreated)
	created := decodeTask(t, rec.Body.Bytes())
	id := created.ID.String()
	// The 201 comes before the start: wait for it, so that the count below is what the refused
	// requests left.
	h.auth = full
	h.waitState(t, created.ID, task.Running)

	tests := []struct {
		name          string
		method, path  string
		body          string
		authorization string
		status        int
		challenge     string // the WWW-Authenticate header a 401 must carry
		parts         []string
	}{
		{"healthz is open", "GET", "/healthz", "", "", 200, "", nil},
		{"healthz with a wrong token is still open", "GET", "/healthz", "", "Bearer nope", 200, "", nil},
		{"no token", "GET", "/tasks", "", "", 401, `Bearer realm="cube"`, []string{"bearer token", "Authorization: Bearer"}},
		{"no token on readyz", "GET", "/readyz", "", "", 401, `Bearer realm="cube"`, nil},
		{"no token on stats", "GET", "/stats", "", "", 401, `Bearer realm="cube"`, nil},
		{"no token on a write", "POST", "/tasks", newEvent().json(t), "", 401, `Bearer realm="cube"`, nil},
		{"no token on an unknown route", "GET", "/nope", "", "", 401, `Bearer realm="cube"`, nil},
		{"empty bearer", "GET", "/tasks", "", "Bearer ", 401, `Bearer realm="cube"`, nil},
		{"basic scheme", "GET", "/tasks", "", "Basic " + fullToken, 401, `Bearer realm="cube"`, nil},
		{"token without scheme", "GET", "/tasks", "", fullToken, 401, `Bearer realm="cube"`, nil},
		{"wrong token", "GET", "/tasks", "", "Bearer wrong", 401, `Bearer realm="cube", error="invalid_token"`, []string{"not valid"}},
		{"prefix of the token", "GET", "/tasks", "", "Bearer " + fullToken[:10], 401, `Bearer realm="cube", error="invalid_token"`, nil},
		{"token with more", "GET", "/tasks", "", "Bearer " + fullToken + "x", 401, `Bearer realm="cube", error="invalid_token"`, nil},
		{"wrong token on a write", "DELETE", "/tasks/" + id, "", "Bearer wrong", 401, `Bearer realm="cube", error="invalid_token"`, nil},
		{"read token lists", "GET", "/tasks", "", read, 200, "", nil},
		{"read token gets", "GET", "/tasks/" + id, "", read, 200, "", nil},
		{"read token reads stats", "GET", "/stats", "", read, 200, "", nil},
		{"read token reads readiness", "GET", "/readyz", "", read, 200, "", nil},
		{"read token, unknown route", "GET", "/nope", "", read, 404, "", nil},
		{"read token posts", "POST", "/tasks", newEvent().json(t), read, 403, "", []string{"read-only", "POST /tasks", "full-access"}},
		{"read token deletes", "DELETE", "/tasks/" + id, "", read, 403, "", []string{"read-only", "DELETE /tasks/" + id}},
		{"read token on a method not allowed", "PUT", "/tasks", "", read, 403, "", nil},
		{"full token reads", "GET", "/tasks/" + id, "", full, 200, "", nil},
		{"scheme in lower case", "GET", "/tasks", "", "bearer " + fullToken, 200, "", nil},
		{"full token, method not allowed", "PUT", "/tasks", "", full, 405, "", nil},
		{"full token, unknown route", "GET", "/nope", "", full, 404, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := h.doAuth(t, tt.method, tt.path, tt.body, tt.authorization)
			if tt.status >= 400 {
				wantError(t, rec, tt.status, tt.parts...)
			} else {
				wantStatus(t, rec, tt.status)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.challenge)
			}
			if strings.Contains(rec.Body.String(), fullToken) || strings.Contains(rec.Body.String(), readToken) {
				t.Errorf("body %s shows a token", rec.Body)
			}
		})
	}

	// Refused requests changed nothing: one task, not deleted.
	var list []task.Task
	rec = h.doAuth(t, http.MethodGet, "/tasks", "", full)
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 1 {
		t.Fatalf("tasks after refused requests: got %s (%v), want the one task", rec.Body, err)
	}
	if starts := h.rt.Starts(); len(starts) != 1 {
		t.Errorf("runtime starts: got %d, want 1", len(starts))
	}
	if stops := h.rt.Stops(); len(stops) != 0 {
		t.Errorf("runtime stops: got %v, want none", stops)
	}

	// The full-access token may delete.
	wantStatus(t, h.doAuth(t, http.MethodDelete, "/tasks/"+id, "", full), http.StatusNoContent)
}

// Without tokens the API asks for none (the existing tests run so); with only a read-only token,
// nobody may write.
func TestAuthModes(t *testing.T) {
	open := newAuthHarness(t, Options{})
	wantStatus(t, open.doAuth(t, http.MethodGet, "/tasks", "", ""), http.StatusOK)
	wantStatus(t, open.doAuth(t, http.MethodGet, "/tasks", "", "Bearer anything"), http.StatusOK)

	readOnly := newAuthHarness(t, Options{ReadToken: readToken})
	wantStatus(t, readOnly.doAuth(t, http.MethodGet, "/tasks", "", "Bearer "+readToken), http.StatusOK)
	wantError(t, readOnly.doAuth(t, http.MethodGet, "/tasks", "", ""), http.StatusUnauthorized)
	wantError(t, readOnly.doAuth(t, http.MethodPost, "/tasks", newEvent().json(t), "Bearer "+readToken), http.StatusForbidden)
	readOnly.wantNothingCreatedAuth(t, "Bearer "+readToken)
}

func (h *harness) wantNothingCreatedAuth(tb testing.TB, authorization string) {
	tb.Helper()
	rec := h.doAuth(tb, http.MethodGet, "/tasks", "", authorization)
	wantStatus(tb, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != "[]" {
		tb.Errorf("GET /tasks: got %s, want []", got)
	}
}

func TestAuthenticatorCheck(t *testing.T) {
	a := newAuthenticator(fullToken, readToken)
	for tok, want := range map[string]access{
		fullToken: accessFull, readToken: accessRead, "": accessNone, "x": accessNone,
		fullToken + " ": accessNone, strings.ToUpper(fullToken): accessNone,
	} {
		if got := a.check(tok); got != want {
			t.Errorf("check(%q): got %v, want %v", tok, got, want)
		}
	}
	// An unset token matches nothing, not even the empty string.
	if got := newAuthenticator("", readToken).check(""); got != accessNone {
		t.Errorf("check(\"\") with no full token: got %v, want none", got)
	}
	if newAuthenticator("", "").enabled() {
		t.Error("enabled without tokens: got true, want false")
	}
}

func TestRetryAfterOnUnavailable(t *testing.T) {
	h := newHarness(t)
	h.rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "ping docker: no answer"))
	rec := h.readyzUntil(t, http.StatusServiceUnavailable)
	wantError(t, rec, http.StatusServiceUnavailable)
	if got := rec.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After on a 503: got %q, want 1", got)
	}
	rec = h.do(t, http.MethodGet, "/tasks/"+uuid.NewString(), "")
	wantError(t, rec, http.StatusNotFound)
	if got := rec.Header().Get("Retry-After"); got != "" {
		t.Errorf("Retry-After on a 404: got %q, want none", got)
	}
}
