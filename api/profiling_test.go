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

// A CPU profile samples for longer than a request may take: its deadlines are lifted, over a real
// connection, where the request timeout would otherwise cut the answer off.
func TestProfilingOutlastsTheRequestTimeout(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(New(h.w, Options{Logger: testLogger(t), Profiling: true, RequestTimeout: 200 * time.Millisecond}))
	t.Cleanup(srv.Close)
	start := time.Now()
	resp, err := http.Get(srv.URL + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatalf("GET profile: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the profile after %s: %v", time.Since(start), err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, gzipMagic) {
		t.Fatalf("got %d %.40q, want 200 and a gzipped profile", resp.StatusCode, body)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("a 1 s profile answered in %s", d)
	}
}
