package client_test

// Tests of the methods for the routes the worker is about to serve (logs, task stats, events),
// against a server that follows their documented contract (api/openapi.json).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// contractServer answers GET /tasks/{id}/logs, GET /tasks/{id}/stats and GET /events as the
// contract says, for one known task.
type contractServer struct {
	id uuid.UUID

	mu        sync.Mutex
	events    []client.Event // every event, Seq 1, 2, ...
	queries   []string       // the query of each logs request
	lastIDs   []string       // the Last-Event-ID of each events request ("" when absent)
	dropAfter int            // when > 0, an events stream ends after this many events
	newEvent  chan struct{}
}

func newContractServer(tb testing.TB) (*contractServer, *client.Client) {
	tb.Helper()
	cs := &contractServer{id: uuid.New(), newEvent: make(chan struct{})}
	srv := httptest.NewServer(cs)
	tb.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	return cs, c
}

func (cs *contractServer) fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"HTTPStatusCode": status, "Message": msg})
}

func (cs *contractServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/events" {
		cs.serveEvents(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/tasks/")
	if !ok {
		cs.fail(w, 404, "no route for "+r.Method+" "+r.URL.Path)
		return
	}
	idStr, sub, _ := strings.Cut(rest, "/")
	if idStr != cs.id.String() {
		cs.fail(w, 404, "task "+idStr+" not found")
		return
	}
	switch sub {
	case "logs":
		cs.serveLogs(w, r)
	case "stats":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(client.TaskStats{
			TaskID: cs.id, ContainerID: "c0ffee", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			CPUPercent: 150.5, MemoryUsage: 12 << 20, MemoryLimit: 64 << 20,
			NetworkRx: 1000, NetworkTx: 2000, BlockRead: 3000, BlockWrite: 4000, PIDs: 7,
		})
	default:
		cs.fail(w, 404, "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (cs *contractServer) serveLogs(w http.ResponseWriter, r *http.Request) {
	cs.mu.Lock()
	cs.queries = append(cs.queries, r.URL.RawQuery)
	cs.mu.Unlock()
	q := r.URL.Query()
	lines := []string{"one", "two", "three"}
	if t := q.Get("tail"); t != "" && t != "all" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			cs.fail(w, 400, fmt.Sprintf("tail: %q is not a number of lines", t))
			return
		}
		lines = lines[max(0, len(lines)-n):]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range lines {
		if q.Get("timestamps") == "true" {
			l = "2025-01-02T03:04:05.000000000Z " + l
		}
		fmt.Fprintln(w, l)
	}
	if q.Get("follow") == "true" {
		w.(http.Flusher).Flush()
		for _, l := range []string{"four", "five"} {
			time.Sleep(5 * time.Millisecond)
			fmt.Fprintln(w, l)
			w.(http.Flusher).Flush()
		}
	}
}

// publish adds an event and wakes the streams.
func (cs *contractServer) publish(typ string, state task.State) {
	cs.mu.Lock()
	ev := client.Event{Seq: int64(len(cs.events) + 1), Time: time.Now().UTC(), TaskID: cs.id, Name: "web", Type: typ, State: state}
	cs.events = append(cs.events, ev)
	close(cs.newEvent)
	cs.newEvent = make(chan struct{})
	cs.mu.Unlock()
}

func (cs *contractServer) serveEvents(w http.ResponseWriter, r *http.Request) {
	last := r.Header.Get("Last-Event-ID")
	cs.mu.Lock()
	cs.lastIDs = append(cs.lastIDs, last)
	next := int64(len(cs.events)) // live: only new events
	if last != "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			cs.mu.Unlock()
			cs.fail(w, 400, "Last-Event-ID: "+strconv.Quote(last)+" is not an event number")
			return
		}
		next = min(n, next)
	}
	drop := cs.dropAfter
	cs.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	fmt.Fprint(w, ": keep-alive\n\n")
	w.(http.Flusher).Flush()
	sent := 0
	for {
		cs.mu.Lock()
		pending := cs.events[next:]
		wake := cs.newEvent
		cs.mu.Unlock()
		for _, ev := range pending {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "id: %d\nevent: task\ndata: %s\n\n", ev.Seq, b)
			w.(http.Flusher).Flush()
			next = ev.Seq
			sent++
			if drop > 0 && sent >= drop {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		}
	}
}

func TestLogs(t *testing.T) {
	cs, c := newContractServer(t)
	tests := []struct {
		opts  client.LogOptions
		query string
		want  string
	}{
		{client.LogOptions{}, "", "one\ntwo\nthree\n"},
		{client.LogOptions{Tail: 2}, "tail=2", "two\nthree\n"},
		{client.LogOptions{Tail: -1, Follow: true}, "follow=true&tail=0", "four\nfive\n"},
		{client.LogOptions{Tail: 1, Timestamps: true}, "tail=1&timestamps=true", "2025-01-02T03:04:05.000000000Z three\n"},
		{client.LogOptions{Since: "10m"}, "since=10m", "one\ntwo\nthree\n"},
		{client.LogOptions{Follow: true}, "follow=true", "one\ntwo\nthree\nfour\nfive\n"},
	}
	for i, tt := range tests {
		rc, err := c.Logs(ctx(t), cs.id, tt.opts)
		if err != nil {
			t.Fatalf("Logs(%+v): %v", tt.opts, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read logs: %v", err)
		}
		if string(b) != tt.want {
			t.Errorf("Logs(%+v): got %q, want %q", tt.opts, b, tt.want)
		}
		if got := cs.queries[i]; got != tt.query {
			t.Errorf("Logs(%+v) query: got %q, want %q", tt.opts, got, tt.query)
		}
	}
	unknown := uuid.New()
	_, err := c.Logs(ctx(t), unknown, client.LogOptions{})
	wantError(t, err, 404, task.ENOTFOUND, unknown.String())

	// Following logs ends when the context does.
	cctx, cancel := context.WithCancel(context.Background())
	rc, err := c.Logs(cctx, cs.id, client.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: got %v, want nil or context.Canceled", err)
	}
	rc.Close()
}

func TestTaskStats(t *testing.T) {
	cs, c := newContractServer(t)
	s, err := c.TaskStats(ctx(t), cs.id)
	if err != nil {
		t.Fatal(err)
	}
	if s.TaskID != cs.id || s.CPUPercent != 150.5 || s.MemoryUsage != 12<<20 || s.MemoryLimit != 64<<20 ||
		s.NetworkRx != 1000 || s.NetworkTx != 2000 || s.BlockRead != 3000 || s.BlockWrite != 4000 || s.PIDs != 7 {
		t.Errorf("TaskStats: got %+v, want the server's sample", s)
	}
	_, err = c.TaskStats(ctx(t), uuid.New())
	wantError(t, err, 404, task.ENOTFOUND)
}

func TestEvents(t *testing.T) {
	cs, c := newContractServer(t)
	cs.publish(task.RecordReceived, task.Pending)
	cs.publish(task.RecordCreated, task.Scheduled)

	// From 0: every kept event, then new ones.
	s, err := c.Events(ctx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		ev, err := s.Next()
		if err != nil || ev.Seq != want || ev.TaskID != cs.id {
			t.Fatalf("Next: got %+v, %v; want event %d of task %s", ev, err, want, cs.id)
		}
	}
	cs.publish(task.RecordStarted, task.Running)
	ev, err := s.Next()
	if err != nil || ev.Seq != 3 || ev.Type != task.RecordStarted || ev.State != task.Running || ev.Name != "web" {
		t.Fatalf("Next: got %+v, %v; want event 3, Started, Running", ev, err)
	}
	if s.LastEventID() != 3 {
		t.Errorf("LastEventID: got %d, want 3", s.LastEventID())
	}
	s.Close()

	// Live: only what happens from now on.
	s, err = c.Events(ctx(t), client.Live)
	if err != nil {
		t.Fatal(err)
	}
	cs.publish(task.RecordExited, task.Completed)
	if ev, err := s.Next(); err != nil || ev.Seq != 4 {
		t.Fatalf("live Next: got %+v, %v; want event 4", ev, err)
	}
	s.Close()

	// Resuming after 2.
	s, err = c.Events(ctx(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := s.Next(); err != nil || ev.Seq != 3 {
		t.Fatalf("resumed Next: got %+v, %v; want event 3", ev, err)
	}
	s.Close()
	if want := []string{"0", "", "2"}; strings.Join(cs.lastIDs, ",") != strings.Join(want, ",") {
		t.Errorf("Last-Event-ID headers: got %q, want %q", cs.lastIDs, want)
	}

	// A cancelled context ends Next.
	cctx, cancel := context.WithCancel(context.Background())
	s, err = c.Events(cctx, client.Live)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel: got %v, want context.Canceled", err)
	}
	s.Close()

	if s, err := c.Events(ctx(t), -5); err != nil {
		t.Errorf("Events(-5): got %v, want a live stream", err)
	} else {
		s.Close()
	}
}

// TestWatchResumes checks that Watch reconnects after the stream breaks, resuming after the last
// event it delivered: nothing missed, nothing twice.
func TestWatchResumes(t *testing.T) {
	cs, c := newContractServer(t)
	cs.dropAfter = 2
	for range 5 {
		cs.publish(task.RecordReceived, task.Pending)
	}
	var got []int64
	errDone := errors.New("done")
	wctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	go func() {
		time.Sleep(20 * time.Millisecond)
		cs.publish(task.RecordStarted, task.Running)
	}()
	err := c.Watch(wctx, 0, func(ev client.Event) error {
		got = append(got, ev.Seq)
		if len(got) == 6 {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Fatalf("Watch: got %v, want the callback's error", err)
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Errorf("events: got %v, want [1 2 3 4 5 6]", got)
	}
	if want := "0,2,4"; strings.Join(cs.lastIDs[:3], ",") != want {
		t.Errorf("Last-Event-ID headers: got %q, want %s first", cs.lastIDs, want)
	}

	// A 4xx is final: retrying will not change it.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.fail(w, http.StatusUnauthorized, "missing bearer token")
	}))
	defer srv.Close()
	c2, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = c2.Watch(ctx(t), 0, func(client.Event) error { return nil })
	if !client.IsUnauthorized(err) || err.Error() != "missing bearer token" {
		t.Errorf("Watch of a 401: got %v, want the 401", err)
	}
}
