package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
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
	var logs testworker.Logs
	wh := testworker.Start(t, testworker.Options{Runtime: rt, Config: worker.Config{Logger: logs.Logger()},
		Serve: func(wh *testworker.Harness) http.Handler { return api.New(wh.Worker, api.Options{Logger: wh.Logger}) }})
	c := wh.Client(t)
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
