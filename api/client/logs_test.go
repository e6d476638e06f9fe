package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
)

// brokenLogs is a runtime whose logs stream breaks after its first line, as the Docker
// adapter's does when the Engine goes silent in the middle of an answer.
type brokenLogs struct{ *workertest.Runtime }

func (brokenLogs) Logs(context.Context, string, task.LogOptions) (io.ReadCloser, error) {
	broken := task.Errorf(task.EUNAVAILABLE, "container logs: the Engine sent nothing for 30s")
	return io.NopCloser(io.MultiReader(strings.NewReader("first line\n"), errReader{broken})), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// A logs answer the worker cannot finish ends, for the client, in an error: never a clean end.
func TestLogsCutShortIsAnError(t *testing.T) {
	rt := brokenLogs{workertest.New()}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w := worker.New(rt, worker.Config{Name: t.Name(), Logger: log})
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	srv := httptest.NewServer(api.New(w, api.Options{Logger: log}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
	})
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	tk, err := c.Start(ctx(t), echo())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := c.Get(ctx(t), tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == task.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task not Running within %v: %v", waitTimeout, got.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rc, err := c.Logs(ctx(t), tk.ID, client.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if string(b) != "first line\n" || err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("logs: got %q, %v; want the first line, then an error saying the logs were cut short", b, err)
	}
	if !strings.Contains(logs.String(), "task logs cut short") || !strings.Contains(logs.String(), "sent nothing") {
		t.Errorf("worker log: got\n%s\nwant the cut logged with its reason", logs.String())
	}
}

// lockedBuffer is a log destination that goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
