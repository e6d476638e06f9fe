package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

func TestLogOptions(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		query string
		want  task.LogOptions
		bad   string // a part of the error message, for a bad query
	}{
		{query: "", want: task.LogOptions{}},
		{query: "tail=all", want: task.LogOptions{}},
		{query: "tail=5&follow=true&timestamps=1", want: task.LogOptions{Tail: 5, Follow: true, Timestamps: true}},
		{query: "tail=0", want: task.LogOptions{Tail: -1}},
		{query: "since=10m", want: task.LogOptions{Since: now.Add(-10 * time.Minute)}},
		{query: "since=2026-01-02T03:00:00.5Z", want: task.LogOptions{Since: time.Date(2026, 1, 2, 3, 0, 0, 5e8, time.UTC)}},
		{query: "since=2026-01-02T04:00:00%2B01:00", want: task.LogOptions{Since: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}},
		{query: "tail=many", bad: `tail: "many" is not a number of lines or all`},
		{query: "tail=-1", bad: "tail:"},
		{query: "since=yesterday", bad: `since: "yesterday" is neither an RFC 3339 time nor a duration`},
		{query: "since=-5m", bad: "since:"},
		{query: "follow=yes", bad: `follow: "yes" is not true or false`},
		{query: "timestamps=2", bad: "timestamps:"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			got, err := logOptions(httptest.NewRequest(http.MethodGet, "/tasks/x/logs?"+tt.query, nil), now)
			if tt.bad != "" {
				if task.ErrorCode(err) != task.EINVALID || !strings.Contains(err.Error(), tt.bad) {
					t.Errorf("got %v, want EINVALID saying %q", err, tt.bad)
				}
				return
			}
			if err != nil || !got.Since.Equal(tt.want.Since) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			got.Since, tt.want.Since = time.Time{}, time.Time{}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// serve serves the harness's worker over a real HTTP server with opts, until the test ends.
func (h *harness) serve(tb testing.TB, opts Options) string {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	srv := httptest.NewServer(New(h.w, opts))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// running submits a task and waits for it to run.
func (h *harness) running(tb testing.TB) task.Task {
	tb.Helper()
	return h.waitState(tb, h.post(tb, newEvent()).ID, task.Running)
}

func get(tb testing.TB, ctx context.Context, url string, header http.Header) *http.Response {
	tb.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	maps.Copy(req.Header, header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	tb.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestLogsRoute(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	h.rt.Print(run.ContainerID, "one", "two", "three")
	path := "/tasks/" + run.ID.String() + "/logs"

	rec := h.do(t, http.MethodGet, path, "")
	if rec.Code != http.StatusOK || rec.Body.String() != "one\ntwo\nthree\n" || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("GET logs: got %d %q (%s), want 200 and the three lines as text", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
	if rec := h.do(t, http.MethodGet, path+"?tail=2", ""); rec.Body.String() != "two\nthree\n" {
		t.Errorf("tail=2: got %q, want the last two lines", rec.Body)
	}
	if rec := h.do(t, http.MethodGet, path+"?tail=0", ""); rec.Code != http.StatusOK || rec.Body.String() != "" {
		t.Errorf("tail=0: got %d %q, want 200 and nothing", rec.Code, rec.Body)
	}
	rec = h.do(t, http.MethodGet, path+"?tail=1&timestamps=true", "")
	ts, text, _ := strings.Cut(strings.TrimSuffix(rec.Body.String(), "\n"), " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || text != "three" {
		t.Errorf("timestamps=true: got %q, want an RFC 3339 time, a space and the line", rec.Body)
	}
	if rec := h.do(t, http.MethodGet, path+"?since=1h", ""); rec.Body.String() != "one\ntwo\nthree\n" {
		t.Errorf("since=1h: got %q, want every line", rec.Body)
	}
	// "since" counts back from the API's clock: two hours on, the last hour has none of them.
	later := &harness{rt: h.rt, w: h.w, h: New(h.w, Options{Logger: testLogger(t), Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})}
	if rec := later.do(t, http.MethodGet, path+"?since=1h", ""); rec.Code != http.StatusOK || rec.Body.String() != "" {
		t.Errorf("since=1h two hours on: got %d %q, want 200 and nothing", rec.Code, rec.Body)
	}
	if rec := later.do(t, http.MethodGet, path+"?since=3h", ""); rec.Body.String() != "one\ntwo\nthree\n" {
		t.Errorf("since=3h two hours on: got %q, want every line", rec.Body)
	}

	wantError(t, h.do(t, http.MethodGet, path+"?tail=x", ""), http.StatusBadRequest, "tail")
	wantError(t, h.do(t, http.MethodGet, path+"?since=x", ""), http.StatusBadRequest, "since")
	wantError(t, h.do(t, http.MethodGet, "/tasks/"+uuid.NewString()+"/logs", ""), http.StatusNotFound, "not found")
	wantError(t, h.do(t, http.MethodGet, "/tasks/nope/logs", ""), http.StatusBadRequest, "taskID")

	// The task ends: its output stays while its container does, and goes with it.
	h.rt.Exit(run.ContainerID, 0, false)
	h.waitState(t, run.ID, task.Completed)
	if rec := h.do(t, http.MethodGet, path, ""); rec.Body.String() != "one\ntwo\nthree\n" {
		t.Errorf("logs of the ended task: got %q, want its output", rec.Body)
	}
	wantStatus(t, h.do(t, http.MethodDelete, "/tasks/"+run.ID.String(), ""), http.StatusNoContent)
	deadline := time.Now().Add(waitTimeout)
	for rec = h.do(t, http.MethodGet, path, ""); rec.Code == http.StatusOK && time.Now().Before(deadline); rec = h.do(t, http.MethodGet, path, "") {
		time.Sleep(2 * time.Millisecond)
	}
	wantError(t, rec, http.StatusConflict, "has no container")
}

// TestLogsFollow follows a task's output over a real connection: each line arrives as it is
// printed, and the answer ends when the container does.
func TestLogsFollow(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	h.rt.Print(run.ContainerID, "before")
	url := h.serve(t, Options{RequestTimeout: 200 * time.Millisecond})
	resp := get(t, context.Background(), url+"/tasks/"+run.ID.String()+"/logs?follow=true&tail=0", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200", resp.StatusCode)
	}
	lines := bufio.NewReader(resp.Body)
	for _, want := range []string{"first", "second"} {
		// Longer than the request timeout: the stream's deadlines are lifted.
		time.Sleep(300 * time.Millisecond)
		h.rt.Print(run.ContainerID, want)
		if got, err := lines.ReadString('\n'); got != want+"\n" {
			t.Fatalf("followed line: got %q, %v; want %q", got, err, want)
		}
	}
	h.rt.Exit(run.ContainerID, 0, false)
	rest, err := io.ReadAll(lines)
	if err != nil || len(rest) != 0 {
		t.Errorf("after the container ended: got %q, %v; want the end of the answer", rest, err)
	}
}

func TestTaskStatsRoute(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	rec := h.do(t, http.MethodGet, "/tasks/"+run.ID.String()+"/stats", "")
	wantStatus(t, rec, http.StatusOK)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	want := []string{"BlockRead", "BlockWrite", "CPUPercent", "ContainerID", "MemoryLimit", "MemoryUsage", "NetworkRx", "NetworkTx", "PIDs", "TaskID", "Time"}
	if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, want) {
		t.Errorf("keys: got %v, want %v", keys, want)
	}
	var got task.ContainerStats
	json.Unmarshal(rec.Body.Bytes(), &got)
	w := workertest.DefaultStats()
	w.TaskID, w.ContainerID, w.Time = run.ID, run.ContainerID, got.Time
	if got != w {
		t.Errorf("stats: got %+v, want %+v", got, w)
	}

	wantError(t, h.do(t, http.MethodGet, "/tasks/"+uuid.NewString()+"/stats", ""), http.StatusNotFound, "not found")
	wantError(t, h.do(t, http.MethodGet, "/tasks/x/stats", ""), http.StatusBadRequest, "taskID")
	h.rt.Exit(run.ContainerID, 1, false)
	h.waitState(t, run.ID, task.Failed)
	wantError(t, h.do(t, http.MethodGet, "/tasks/"+run.ID.String()+"/stats", ""), http.StatusConflict, "not running")
}

// sseMessage is one message of an event stream.
type sseMessage struct {
	id, event, data string
	comment         bool
}

// sseReader reads an event stream's messages.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next(tb testing.TB) sseMessage {
	tb.Helper()
	var m sseMessage
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			tb.Fatalf("event stream: %v (so far %+v)", err, m)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return m
		case strings.HasPrefix(line, ":"):
			m.comment = true
		case strings.HasPrefix(line, "id: "):
			m.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			m.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			m.data = strings.TrimPrefix(line, "data: ")
		default:
			tb.Fatalf("event stream: unexpected line %q", line)
		}
	}
}

// change reads the next message, skipping comments, and decodes it as a task change.
func (s sseReader) change(tb testing.TB) task.Change {
	tb.Helper()
	m := s.next(tb)
	for m.comment && m.data == "" {
		m = s.next(tb)
	}
	var c task.Change
	if err := json.Unmarshal([]byte(m.data), &c); err != nil || m.event != "task" || m.id != strconv.FormatUint(c.Seq, 10) {
		tb.Fatalf("message %+v: want event task, data a change, id its Seq (%v)", m, err)
	}
	return c
}

func TestEventsLiveResumeAndKeepAlive(t *testing.T) {
	h := newHarness(t)
	first := h.running(t)
	url := h.serve(t, Options{EventKeepAlive: 50 * time.Millisecond, RequestTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	resp := get(t, ctx, url+"/events", nil)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /events: got %d %s, want 200 text/event-stream", resp.StatusCode, ct)
	}
	sse := sseReader{bufio.NewReader(resp.Body)}
	// Live: the stream opens at the newest change, then carries only new ones.
	open := sse.next(t)
	newest := h.w.LastChange()
	if open.id != strconv.FormatUint(newest, 10) || open.data != "" {
		t.Fatalf("opening message: got %+v, want a lone id %d", open, newest)
	}
	// Idle for longer than a request may take: keep-alive comments, and the stream lives on.
	time.Sleep(300 * time.Millisecond)
	if m := sse.next(t); !m.comment {
		t.Errorf("idle stream: got %+v, want a keep-alive comment", m)
	}
	second := h.running(t)
	var types []string
	var last uint64 = newest
	for c := (task.Change{}); c.State != task.Running; {
		c = sse.change(t)
		if c.TaskID != second.ID || c.Seq != last+1 {
			t.Fatalf("change %+v: want task %s, Seq %d", c, second.ID, last+1)
		}
		last = c.Seq
		types = append(types, c.Type)
	}
	if want := []string{"Received", "Created", "Started"}; !slices.Equal(types, want) {
		t.Errorf("a start: got %v, want %v", types, want)
	}
	cancel()

	// Resume after the Received of the second task: the rest of its start, then live.
	resp = get(t, context.Background(), url+"/events", http.Header{"Last-Event-Id": {strconv.FormatUint(newest+1, 10)}})
	sse = sseReader{bufio.NewReader(resp.Body)}
	for seq := newest + 2; seq <= last; seq++ {
		if c := sse.change(t); c.Seq != seq {
			t.Fatalf("replay: got Seq %d, want %d", c.Seq, seq)
		}
	}
	h.rt.Exit(first.ContainerID, 2, false)
	if c := sse.change(t); c.Seq != last+1 || c.TaskID != first.ID || c.Type != "Exited" {
		t.Errorf("live after the replay: got %+v, want Seq %d, the first task's Exited", c, last+1)
	}
	resp.Body.Close()

	// Last-Event-ID 0: every kept change.
	resp = get(t, context.Background(), url+"/events", http.Header{"Last-Event-Id": {"0"}})
	sse = sseReader{bufio.NewReader(resp.Body)}
	if c := sse.change(t); c.Seq >= newest || c.TaskID != first.ID || c.Type != "Received" {
		t.Errorf("Last-Event-ID 0: first change %+v, want the first task's Received", c)
	}
	resp.Body.Close()

	// A number from before the worker's start, or above the newest (a worker that restarted
	// with its clock behind): a reset at the newest change, then live.
	newest = h.w.LastChange()
	for _, id := range []string{"7", strconv.FormatUint(newest+99, 10)} {
		resp := get(t, context.Background(), url+"/events", http.Header{"Last-Event-Id": {id}})
		sse := sseReader{bufio.NewReader(resp.Body)}
		m := sse.next(t)
		var c task.Change
		if err := json.Unmarshal([]byte(m.data), &c); err != nil || m.event != "reset" || m.id != strconv.FormatUint(newest, 10) ||
			c.Type != task.ChangeReset || c.Seq != newest || !strings.Contains(c.Message, "read the tasks again") {
			t.Errorf("Last-Event-ID %s: got %+v (%v), want event reset with id %d and a message", id, m, err, newest)
		}
		third := h.running(t)
		if c := sse.change(t); c.Seq != newest+1 || c.TaskID != third.ID {
			t.Errorf("Last-Event-ID %s: after the reset got %+v, want the live change %d", id, c, newest+1)
		}
		resp.Body.Close()
		newest = h.w.LastChange()
	}
}

func TestEventsBadLastEventID(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"x", "-1", "1.5", ""} {
		req := httptest.NewRequest(http.MethodGet, "/events", nil)
		req.Header.Set("Last-Event-ID", id)
		rec := httptest.NewRecorder()
		h.h.ServeHTTP(rec, req)
		wantError(t, rec, http.StatusBadRequest, "Last-Event-ID")
	}
}

// TestObserveSeesRoutePatterns checks that the Observe hook hears of every request with its
// route pattern, never the raw path with a task's ID.
func TestObserveSeesRoutePatterns(t *testing.T) {
	h := newHarness(t)
	type seen struct {
		method, route string
		status        int
	}
	var mu sync.Mutex
	var got []seen
	handler := New(h.w, Options{Logger: testLogger(t), Token: "full-access-token-0123456789",
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "m 1\n") }),
		Observe: func(method, route string, status int, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, seen{method, route, status})
		}})
	id := uuid.NewString()
	for _, tt := range []struct{ method, path, token string }{
		{"GET", "/tasks/" + id, "full-access-token-0123456789"},
		{"GET", "/tasks/" + id + "/logs", "full-access-token-0123456789"},
		{"DELETE", "/tasks/" + id, "full-access-token-0123456789"},
		{"GET", "/metrics", "full-access-token-0123456789"},
		{"GET", "/nope", "full-access-token-0123456789"},
		{"GET", "/tasks", ""},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		handler.ServeHTTP(httptest.NewRecorder(), req)
	}
	want := []seen{
		{"GET", "/tasks/{taskID}", 404},
		{"GET", "/tasks/{taskID}/logs", 404},
		{"DELETE", "/tasks/{taskID}", 404},
		{"GET", "/metrics", 200},
		{"GET", "", 404},
		{"GET", "", 401}, // turned away before routing
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("observed:\n got %v\nwant %v", got, want)
	}
}

// TestStreamsEndWithStreamContext checks that followed logs and event streams end when the
// server's StreamContext is done, as when the server shuts down.
func TestStreamsEndWithStreamContext(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	url := h.serve(t, Options{StreamContext: streams})
	logs := get(t, context.Background(), url+"/tasks/"+run.ID.String()+"/logs?follow=true", nil)
	events := get(t, context.Background(), url+"/events", nil)
	if logs.StatusCode != http.StatusOK || events.StatusCode != http.StatusOK {
		t.Fatalf("got %d and %d, want two streams", logs.StatusCode, events.StatusCode)
	}
	ended := make(chan string, 2)
	for name, body := range map[string]io.Reader{"logs": logs.Body, "events": events.Body} {
		go func() {
			io.Copy(io.Discard, body)
			ended <- name
		}()
	}
	select {
	case name := <-ended:
		t.Fatalf("the %s stream ended before its time", name)
	case <-time.After(100 * time.Millisecond):
	}
	endStreams()
	for range 2 {
		select {
		case <-ended:
		case <-time.After(waitTimeout):
			t.Fatal("a stream did not end with the stream context")
		}
	}
}

// A logs answer the runtime's stream breaks off is aborted (http.ErrAbortHandler), after what
// came, so that the client sees it break rather than end; it is counted all the same.
func TestLogsBrokenOffAbort(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	h.rt.Print(run.ContainerID, "one", "two")
	h.rt.LogsBreak = task.Errorf(task.EUNAVAILABLE, "container logs: the Engine sent nothing for 30s")
	var observed []string
	handler := New(h.w, Options{Logger: testLogger(t), Observe: func(method, route string, status int, _ time.Duration) {
		observed = append(observed, fmt.Sprintf("%s %s %d", method, route, status))
	}})
	rec := httptest.NewRecorder()
	aborted := func() (v any) {
		defer func() { v = recover() }()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tasks/"+run.ID.String()+"/logs", nil))
		return nil
	}()
	if aborted != http.ErrAbortHandler || rec.Body.String() != "one\ntwo\n" {
		t.Errorf("logs broken off: got panic %v and body %q, want http.ErrAbortHandler after the two lines", aborted, rec.Body)
	}
	if want := []string{"GET /tasks/{taskID}/logs 200"}; !slices.Equal(observed, want) {
		t.Errorf("observed: got %v, want %v", observed, want)
	}
}

// blockedWriter is a connection to a client that stopped reading: its writes after the first
// block for the write deadline, then fail as net/http fails them once it has closed the
// connection, without the deadline's error.
type blockedWriter struct {
	*httptest.ResponseRecorder
	block  time.Duration
	writes int
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	if b.writes++; b.writes == 1 {
		return b.ResponseRecorder.Write(p)
	}
	time.Sleep(b.block) // the socket's buffers are full: the write waits out its deadline
	return 0, errors.New("write tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection")
}

// A write that fails once its deadline has passed is a slow client cut off, whatever error the
// server passes on (net/http closes the connection on a failed chunk write, and may report
// that instead of the deadline): the worker says so, and the answer breaks.
func TestLogsSlowReaderCutOffWhateverTheError(t *testing.T) {
	h := newHarness(t)
	run := h.running(t)
	lines := make([]string, 2000)
	for i := range lines {
		lines[i] = strings.Repeat("y", 99)
	}
	h.rt.Print(run.ContainerID, lines...)
	var logs bytes.Buffer
	const timeout = 50 * time.Millisecond
	handler := New(h.w, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), RequestTimeout: timeout})
	w := &blockedWriter{ResponseRecorder: httptest.NewRecorder(), block: timeout}
	aborted := func() (v any) {
		defer func() { v = recover() }()
		handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/tasks/"+run.ID.String()+"/logs", nil))
		return nil
	}()
	if aborted != http.ErrAbortHandler {
		t.Errorf("a slow client: got panic %v, want http.ErrAbortHandler (the answer breaks)", aborted)
	}
	if !strings.Contains(logs.String(), "the client took no data for the request timeout; cut off") {
		t.Errorf("a slow client: the worker did not say it cut it off:\n%s", logs.String())
	}
}
