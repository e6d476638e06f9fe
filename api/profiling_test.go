package api

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// gzipMagic starts every profile in the pprof format (gzipped protocol buffers).
var gzipMagic = []byte{0x1f, 0x8b}

func TestProfilingOffByDefault(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
		wantError(t, h.do(t, http.MethodGet, path, ""), http.StatusNotFound, "no route")
	}
}

func TestProfiling(t *testing.T) {
	h := newAuthHarness(t, Options{Profiling: true, Token: fullToken, ReadToken: readToken})
	full, read := "Bearer "+fullToken, "Bearer "+readToken

	tests := []struct {
		name          string
		path          string
		authorization string
		status        int
		profile       bool // the body is a profile in the pprof format
	}{
		{"no token", "/debug/pprof/heap", "", 401, false},
		{"wrong token", "/debug/pprof/goroutine", "Bearer wrong", 401, false},
		{"no token on the index", "/debug/pprof/", "", 401, false},
		{"no token on a CPU profile", "/debug/pprof/profile?seconds=1", "", 401, false},
		{"heap", "/debug/pprof/heap", full, 200, true},
		{"goroutines", "/debug/pprof/goroutine", full, 200, true},
		{"read token reads a profile", "/debug/pprof/allocs", read, 200, true},
		{"CPU profile", "/debug/pprof/profile?seconds=1", full, 200, true},
		{"index", "/debug/pprof/", full, 200, false},
		{"unknown profile", "/debug/pprof/nope", full, 404, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := h.doAuth(t, http.MethodGet, tt.path, "", tt.authorization)
			if tt.status == 401 {
				wantError(t, rec, tt.status, "token")
				return
			}
			if rec.Code != tt.status {
				t.Fatalf("status: got %d, want %d (body %.200s)", rec.Code, tt.status, rec.Body)
			}
			if tt.profile && !bytes.HasPrefix(rec.Body.Bytes(), gzipMagic) {
				t.Errorf("body: got %.40q, want a gzipped profile", rec.Body)
			}
		})
	}
}

// A profile that samples (a CPU profile, a named profile as a delta over seconds) takes longer
// than a request may: its deadlines are lifted, over a real connection, where the request
// timeout would otherwise cut the answer off. A second profile on the same connection is whole.
func TestProfilingOutlastsTheRequestTimeout(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(New(h.w, Options{Logger: testLogger(t), Profiling: true, RequestTimeout: 200 * time.Millisecond}))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/debug/pprof/heap?seconds=1", "/debug/pprof/profile?seconds=1", "/debug/pprof/allocs?seconds=1"} {
		start := time.Now()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: read the profile after %s: %v", path, time.Since(start), err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, gzipMagic) {
			t.Fatalf("GET %s: got %d %.80q, want 200 and a gzipped profile", path, resp.StatusCode, body)
		}
		if d := time.Since(start); d < time.Second {
			t.Errorf("GET %s: a 1 s profile answered in %s", path, d)
		}
	}
}

// A profile may sample for at most maxSample: a longer one is refused before it starts.
func TestProfilingRefusesLongSamples(t *testing.T) {
	h := newAuthHarness(t, Options{Profiling: true, Token: fullToken})
	for _, path := range []string{"/debug/pprof/profile?seconds=601", "/debug/pprof/trace?seconds=600.5", "/debug/pprof/heap?seconds=100000000000"} {
		wantError(t, h.doAuth(t, http.MethodGet, path, "", "Bearer "+fullToken), http.StatusBadRequest, "seconds")
	}
}
