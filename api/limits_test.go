package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
)

// panicStore is a store whose List, Snapshot and Refs (what GET /tasks reads) panic: a bug deep
// in a real handler's path.
type panicStore struct{ worker.MemoryStore }

func (*panicStore) List() []task.Task                { panic("store is broken") }
func (*panicStore) Snapshot([]task.Task) []task.Task { panic("store is broken") }
func (*panicStore) Refs([]*task.Task) []*task.Task   { panic("store is broken") }

// A panic in a real handler, behind every middleware, is a logged stack and a 500; the server
// goes on serving.
func TestPanicInHandlerPath(t *testing.T) {
	var logs testworker.Logs
	w := worker.New(workertest.New(), worker.Config{Store: &panicStore{}})
	srv := httptest.NewServer(New(w, Options{Logger: logs.Logger(), Token: fullToken}))
	defer srv.Close()

	get := func(path string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+fullToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get("/tasks")
	var e ErrorResponse
	if err := json.Unmarshal(body, &e); err != nil || code != 500 || e.HTTPStatusCode != 500 || e.Message != "internal error" {
		t.Errorf("GET /tasks with a panicking store: got %d %s, want 500 internal error", code, body)
	}
	if strings.Contains(string(body), "store is broken") {
		t.Errorf("body %s shows the panic", body)
	}
	if l := logs.String(); !strings.Contains(l, "panic in handler") || !strings.Contains(l, "store is broken") || !strings.Contains(l, "panicStore") {
		t.Errorf("log: got %q, want the panic with its stack", l)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("GET /healthz after the panic: got %d %s, want 200", code, body)
	}
}

// A body that trickles in slower than the request timeout gets 408, and the worker gets nothing.
func TestSlowBodyIsCutOff(t *testing.T) {
	h := newHarness(t)
	const timeout = 200 * time.Millisecond
	addr := strings.TrimPrefix(h.serve(t, Options{RequestTimeout: timeout}), "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := newEvent().json(t)
	fmt.Fprintf(conn, "POST /tasks HTTP/1.1\r\nHost: cube\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the answer to a slow body: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received in time") {
		t.Errorf("slow body: got %d %s, want 408 saying the body did not come in time", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("slow body answered after %v, want about %v", d, timeout)
	}
	h.wantNothingCreated(t)
}

// A handler that streams lifts the request's deadlines and may go on for longer than the request
// timeout, with its context alive; one that does not is cut off.
func TestLiftDeadlines(t *testing.T) {
	const timeout = 100 * time.Millisecond
	s := &Server{log: testLogger(t), requestTimeout: timeout}
	ctxErr := make(chan error, 2)
	srv := httptest.NewServer(s.deadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			if err := liftDeadlines(w, timeout); err != nil {
				t.Errorf("liftDeadlines: %v", err)
			}
		}
		for i := range 6 {
			if r.URL.Path == "/stream" {
				liftDeadlines(w, timeout)
			}
			fmt.Fprintf(w, "chunk %d\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(timeout)
		}
		if r.URL.Path == "/stream" {
			liftDeadlines(w, timeout) // for the end of the answer, written after the handler returns
		}
		ctxErr <- r.Context().Err()
	})))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(b), "chunk") != 6 {
		t.Errorf("stream: got %q, %v; want 6 chunks", b, err)
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("stream's context: got %v, want alive", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/plain", nil)
	resp, err = srv.Client().Do(req)
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil || strings.Count(string(b), "chunk") == 6 {
		t.Errorf("a long answer that did not lift its deadlines: got %q, %v; want it cut off", b, err)
	}
	if err := <-ctxErr; err == nil {
		t.Errorf("context of a request past its read deadline: got alive, want cancelled")
	}
}
