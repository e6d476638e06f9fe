package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/google/uuid"
)

// A worker whose Docker Engine does not answer says so: /readyz names the Engine (not "still
// recovering"), and cube run --wait says what it waits for and why it still waits.
// It runs alone (not in parallel): it points the whole process's DOCKER_HOST elsewhere.
func TestReadyzNamesTheDockerEngine(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock")) // nothing listens there
	logs := newLogSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"worker", "--port", "0", "--name", "cube-test-nodocker-" + uuid.NewString()[:8], "--data-dir", t.TempDir(), "--lock-dir", lockDir(t)}, func(string) string { return "" }, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("cube worker did not stop within 30s")
		}
	})
	var addr string
	select {
	case addr = <-logs.addr:
	case err := <-done:
		t.Fatalf("cube worker exited at start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("cube worker did not listen within 30s\n%s", logs)
	}

	const want = "the Docker Engine does not answer, so the worker cannot recover its tasks yet: "
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for !strings.HasPrefix(last, want) {
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz: got %q, want a 503 starting %q", last, want)
		}
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var e api.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("GET /readyz with no Docker Engine: got %d, want 503", resp.StatusCode)
		}
		last = e.Message
		time.Sleep(20 * time.Millisecond)
	}

	// cube run --wait: accepted, and it says what it waits for, and why it still does.
	wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer wcancel()
	var stdout, stderr bytes.Buffer
	err := run(wctx, []string{"run", "-w", addr, "--name", "waits", "--wait", "cube-echo:latest"}, func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.HasPrefix(err.Error(), "stopped waiting; task waits (") {
		t.Errorf("cube run --wait, interrupted: got %v, want it to say it stopped waiting", err)
	}
	lines := strings.Split(stderr.String(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "waiting for task waits (") || !strings.HasPrefix(lines[1], "still waiting: the Docker Engine has not answered since ") {
		t.Errorf("cube run --wait, stderr: got %q, want what it waits for, then why it still waits", stderr.String())
	}
}
