package main

// Logs, task stats, the event stream and the metrics, end to end: `cube worker` in-process on the
// real Docker Engine, driven over HTTP and through api/client.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/internal/metrics"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// getText GETs path and returns the status, the Content-Type and the body.
func (d *daemon) getText(t *testing.T, path string) (int, string, string) {
	t.Helper()
	resp, err := client.Get(d.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// taskLogs GETs the task's logs with query and expects 200 and plain text.
func (d *daemon) taskLogs(t *testing.T, id uuid.UUID, query string) string {
	t.Helper()
	code, ct, body := d.getText(t, "/tasks/"+id.String()+"/logs?"+query)
	if code != http.StatusOK || ct != "text/plain; charset=utf-8" {
		t.Fatalf("GET logs?%s: got %d %s %q, want 200 text/plain", query, code, ct, body)
	}
	return body
}

// wantErrorAnswer fails the test unless GET path answers status with a JSON error whose message
// holds part.
func (d *daemon) wantErrorAnswer(t *testing.T, path string, status int, part string) {
	t.Helper()
	var e api.ErrorResponse
	if code := d.do(t, http.MethodGet, path, nil, &e); code != status || e.HTTPStatusCode != status || !strings.Contains(e.Message, part) {
		t.Errorf("GET %s: got %d %+v, want %d saying %q", path, code, e, status, part)
	}
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestLogsEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	// The lines come 100ms apart: stdout and stderr are read apart, and lines printed at once to
	// both may come in either order.
	tk := echoTask("--print", "hello", "--lines", "3", "--interval", "100ms", "--stderr", "oops", "--sleep", "1m")
	d.running(t, tk, 30*time.Second)
	var all []string
	deadline := time.Now().Add(10 * time.Second)
	for len(all) < 4 && time.Now().Before(deadline) {
		all = lines(d.taskLogs(t, tk.ID, ""))
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(all)
	if want := []string{"hello 1", "hello 2", "hello 3", "oops"}; !slices.Equal(all, want) {
		t.Fatalf("logs: got %q, want %q: stdout and stderr as lines", all, want)
	}
	if got := d.taskLogs(t, tk.ID, "tail=1"); got != "hello 3\n" {
		t.Errorf("tail=1: got %q, want the last line", got)
	}
	if got := d.taskLogs(t, tk.ID, "tail=0"); got != "" {
		t.Errorf("tail=0: got %q, want nothing", got)
	}
	stamped := lines(d.taskLogs(t, tk.ID, "tail=2&timestamps=true"))
	for i, want := range []string{"hello 2", "hello 3"} {
		if i >= len(stamped) {
			t.Fatalf("tail=2&timestamps=true: got %q, want two lines", stamped)
		}
		ts, text, _ := strings.Cut(stamped[i], " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || text != want || time.Since(at) > time.Minute {
			t.Errorf("timestamped line %q: want a recent RFC 3339 time, a space and %q", stamped[i], want)
		}
	}
	if got := lines(d.taskLogs(t, tk.ID, "since=1m")); len(got) != 4 {
		t.Errorf("since=1m: got %q, want all four lines", got)
	}
	later := time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)
	if got := d.taskLogs(t, tk.ID, "since="+later); got != "" {
		t.Errorf("since a later time: got %q, want nothing", got)
	}
	d.wantErrorAnswer(t, "/tasks/"+tk.ID.String()+"/logs?tail=some", http.StatusBadRequest, "tail")
	d.wantErrorAnswer(t, "/tasks/"+tk.ID.String()+"/logs?since=then", http.StatusBadRequest, "since")
	d.wantErrorAnswer(t, "/tasks/"+uuid.NewString()+"/logs", http.StatusNotFound, "not found")

	// Followed output comes as it is printed and ends when the task does.
	ticker := echoTask("--print", "tick", "--lines", "5", "--interval", "300ms")
	d.submit(t, ticker)
	d.waitTask(t, ticker.ID, 30*time.Second, "given a container", func(t task.Task) bool { return t.ContainerID != "" })
	start := time.Now()
	resp, err := client.Get(d.url + "/tasks/" + ticker.ID.String() + "/logs?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	if err != nil || first != "tick 1\n" {
		t.Fatalf("first followed line: got %q, %v", first, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the first line came after %v: want it as soon as printed, not at the end", d)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "tick 2\ntick 3\ntick 4\ntick 5\n" {
		t.Errorf("the rest of the followed output: got %q, %v; want ticks 2 to 5, then the end", rest, err)
	}
	done := d.waitState(t, ticker.ID, task.Completed, 10*time.Second)

	// The task ended; its container is kept, and so is its output.
	if got := lines(d.taskLogs(t, ticker.ID, "")); len(got) != 5 || got[4] != "tick 5" {
		t.Errorf("logs of the ended task: got %q, want its five lines", got)
	}
	if got := d.taskLogs(t, ticker.ID, "follow=true&tail=1"); got != "tick 5\n" {
		t.Errorf("following the ended task: got %q, want its last line and the end", got)
	}
	// Once it is deleted its container is gone: 409.
	if code := d.do(t, http.MethodDelete, "/tasks/"+ticker.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d", code)
	}
	d.waitTask(t, ticker.ID, 30*time.Second, "without its container", func(t task.Task) bool { return t.ContainerID == "" })
	if !containerGone(t, done.ContainerID) {
		t.Fatalf("container %s still exists", done.ContainerID)
	}
	d.wantErrorAnswer(t, "/tasks/"+ticker.ID.String()+"/logs", http.StatusConflict, "has no container")
}

func TestTaskStatsEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	busy := echoTask("--busy", "--alloc", "8m")
	busy.Memory = 64 << 20
	run := d.running(t, busy, 30*time.Second)
	// A spinning loop keeps one core busy, an idle task uses next to none; a loaded machine
	// gives the spin less than a core, and not always the same: sample (each sample spans
	// about a second) until it shows the spin, or the deadline passes.
	var s apiclient.TaskStats
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code := d.do(t, http.MethodGet, "/tasks/"+busy.ID.String()+"/stats", nil, &s); code != http.StatusOK {
			t.Fatalf("GET stats: got %d, want 200", code)
		}
		if s.CPUPercent >= 10 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("stats of a busy task: %+v", s)
	if s.TaskID != busy.ID || s.ContainerID != run.ContainerID || time.Since(s.Time) > time.Minute {
		t.Errorf("sample: got task %s container %s at %v, want %s %s now", s.TaskID, s.ContainerID, s.Time, busy.ID, run.ContainerID)
	}
	if s.CPUPercent < 10 {
		t.Errorf("CPUPercent: got %.1f, want about 100: one core busy", s.CPUPercent)
	}
	if s.MemoryUsage < 8<<20 || s.MemoryLimit != 64<<20 || s.PIDs < 1 {
		t.Errorf("memory %d of %d bytes, %d PIDs: want at least the 8 MiB allocated, of 64 MiB, and a process", s.MemoryUsage, s.MemoryLimit, s.PIDs)
	}

	quick := echoTask("--print", "bye")
	d.submit(t, quick)
	d.waitState(t, quick.ID, task.Completed, 30*time.Second)
	d.wantErrorAnswer(t, "/tasks/"+quick.ID.String()+"/stats", http.StatusConflict, "not running")
	d.wantErrorAnswer(t, "/tasks/"+uuid.NewString()+"/stats", http.StatusNotFound, "not found")
}

// collect reads events of the stream until one satisfies last, and returns them.
func collect(t *testing.T, s *apiclient.EventStream, last func(apiclient.Event) bool) []apiclient.Event {
	t.Helper()
	var out []apiclient.Event
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("event stream after %d events (%v): %v", len(out), types(out), err)
		}
		out = append(out, ev)
		if last(ev) {
			return out
		}
	}
}

func types(evs []apiclient.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type+":"+ev.State.String())
	}
	return out
}

// consecutive fails the test unless the events' Seqs run on from after, one by one.
func consecutive(t *testing.T, evs []apiclient.Event, after int64) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != after+int64(i)+1 {
			t.Fatalf("event %d: Seq %d, want %d (nothing missed, nothing twice); events %v", i, ev.Seq, after+int64(i)+1, types(evs))
		}
	}
}

func TestEventStreamEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c, err := apiclient.New(strings.TrimPrefix(d.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Live: a task's whole life, in order.
	start := time.Now() // the worker started before: its numbers are below this in µs
	s, err := c.Events(ctx, apiclient.Live)
	if err != nil {
		t.Fatal(err)
	}
	failing := echoTask("--print", "x", "--sleep", "300ms", "--exit", "3")
	d.submit(t, failing)
	evs := collect(t, s, func(ev apiclient.Event) bool { return ev.Type == task.RecordFailed })
	if evs[0].Seq <= 0 || evs[0].Seq > start.UnixMicro() {
		t.Errorf("first event's Seq %d, want the microseconds since 1970 at the worker's start (before %d)", evs[0].Seq, start.UnixMicro())
	}
	consecutive(t, evs, evs[0].Seq-1)
	want := []string{"Received:Scheduled", "Created:Scheduled", "Started:Running", "Exited:Failed", "Failed:Failed"}
	if got := types(evs); !slices.Equal(got, want) {
		t.Errorf("a failing task's life: got %v, want %v", got, want)
	}
	for _, ev := range evs {
		if ev.TaskID != failing.ID || ev.Name != failing.Name || ev.Time.IsZero() {
			t.Errorf("event %+v: want task %s named %s, with a time", ev, failing.ID, failing.Name)
		}
	}
	if last := evs[len(evs)-1]; last.Message != "exited with code 3" {
		t.Errorf("Failed event: message %q, want the reason", last.Message)
	}
	seen := s.LastEventID()
	s.Close()

	// While no one listens, another task runs and ends.
	ok := echoTask("--print", "fine")
	d.submit(t, ok)
	d.waitState(t, ok.ID, task.Completed, 30*time.Second)

	// Resuming with Last-Event-ID gives what was missed, then what follows, live.
	s, err = c.Events(ctx, seen)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	missed := collect(t, s, func(ev apiclient.Event) bool { return ev.State == task.Completed })
	consecutive(t, missed, seen)
	if got, want := types(missed), []string{"Received:Scheduled", "Created:Scheduled", "Started:Running", "Exited:Completed"}; !slices.Equal(got, want) {
		t.Errorf("the missed task's life: got %v, want %v", got, want)
	}
	third := echoTask("--listen", ":7777")
	d.submit(t, third)
	live := collect(t, s, func(ev apiclient.Event) bool { return ev.State == task.Running })
	consecutive(t, live, missed[len(missed)-1].Seq)
	if live[0].TaskID != third.ID || live[0].Type != task.RecordReceived {
		t.Errorf("live after the replay: got %+v, want the third task's Received", live[0])
	}

	// Last-Event-ID 0: everything kept.
	all, err := c.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if ev, err := all.Next(); err != nil || ev.Seq != evs[0].Seq || ev.TaskID != failing.ID {
		t.Errorf("Last-Event-ID 0: first event %+v, %v; want Seq %d", ev, err, evs[0].Seq)
	}
	// A number from before this worker's start, as after a worker restart: a reset.
	old, err := c.Events(ctx, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if ev, err := old.Next(); err != nil || ev.Type != apiclient.EventReset || ev.Seq < live[len(live)-1].Seq || ev.Message == "" {
		t.Errorf("Last-Event-ID from an earlier run: first event %+v, %v; want a Reset at the newest Seq", ev, err)
	}
	d.wantErrorAnswerHeader(t, "/events", "Last-Event-ID", "x", http.StatusBadRequest)
}

// wantErrorAnswerHeader fails the test unless GET path with the header answers status with a
// JSON error.
func (d *daemon) wantErrorAnswerHeader(t *testing.T, path, key, value string, status int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, d.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(key, value)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.ErrorResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != status || e.HTTPStatusCode != status {
		t.Errorf("GET %s with %s: %s: got %d %+v (%v), want %d", path, key, value, resp.StatusCode, e, err, status)
	}
}

// scrape GETs /metrics and returns every sample as "name{label=value,...}" → value, labels in
// the order of the text format (sorted by name); a histogram gives name{...}_count and _sum.
func (d *daemon) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	code, ct, body := d.getText(t, "/metrics")
	if code != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: got %d %s, want 200 text/plain", code, ct)
	}
	out, err := metrics.Flatten(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return out
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-`)

func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	before := d.scrape(t)

	// A task that fails, is restarted once by its policy, and fails again; one killed for lack of
	// memory; one that runs on.
	crash := echoTask("--print", "crash", "--exit", "3")
	crash.RestartPolicy = task.RestartOnFailure
	crash.Restart = &task.RestartSpec{MaxAttempts: 1, Delay: ms(100 * time.Millisecond)}
	oom := echoTask("--oom", "64m") // see TestOOMKilled
	oom.Memory = 16 << 20
	web := echoTask("--listen", ":7777")
	for _, tk := range []task.Task{crash, oom, web} {
		d.submit(t, tk)
	}
	d.waitState(t, crash.ID, task.Failed, time.Minute)
	d.waitState(t, oom.ID, task.Failed, time.Minute)
	d.waitState(t, web.ID, task.Running, 30*time.Second)
	d.getText(t, "/tasks/"+web.ID.String()+"/logs")

	// The counters follow the change stream, and the last exits may still be on their way:
	// wait until every figure is what it must be, then report those that never got there.
	moved := func(after map[string]float64, k string) float64 { return after[k] - before[k] }
	wrong := func(after map[string]float64) []string {
		var out []string
		for k, want := range map[string]float64{
			"cube_task_starts_total":                               4, // crash twice, oom, web
			"cube_task_exits_total":                                3, // crash twice, oom
			"cube_task_restarts_total":                             1,
			"cube_task_ooms_total":                                 1,
			"cube_task_start_duration_seconds{phase=total}_count":  3, // the submits, not the restart
			"cube_task_start_duration_seconds{phase=create}_count": 3,
			"cube_task_start_duration_seconds{phase=start}_count":  3,
			"cube_docker_call_duration_seconds{op=start}_count":    4,
			"cube_docker_call_duration_seconds{op=logs}_count":     1,
		} {
			if got := moved(after, k); got != want {
				out = append(out, fmt.Sprintf("%s: moved by %v, want %v", k, got, want))
			}
		}
		for k, want := range map[string]float64{
			"cube_tasks{state=Running}": 1,
			"cube_tasks{state=Failed}":  2,
			"cube_tasks{state=Pending}": 0,
			"cube_queue_depth":          0,
		} {
			if got := after[k]; got != want {
				out = append(out, fmt.Sprintf("%s: got %v, want %v", k, got, want))
			}
		}
		sort.Strings(out)
		return out
	}
	var after map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		after = d.scrape(t)
		if len(wrong(after)) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, msg := range wrong(after) {
		t.Error(msg)
	}
	// An exit is taken from the die event; only a SIGKILL-coded one (the OOM kill) is inspected.
	if after["cube_task_start_duration_seconds{phase=total}_sum"] <= 0 || after["cube_docker_call_duration_seconds{op=inspect}_count"] < 1 {
		t.Errorf("start time sum %v, inspect calls %v: want time spent and the OOM kill inspected",
			after["cube_task_start_duration_seconds{phase=total}_sum"], after["cube_docker_call_duration_seconds{op=inspect}_count"])
	}
	if got := moved(after, "cube_http_requests_total{code=201,method=POST,route=/tasks}"); got != 3 {
		t.Errorf("POST /tasks answered 201: moved by %v, want 3", got)
	}
	if got := after["cube_http_requests_total{code=200,method=GET,route=/tasks/{taskID}}"]; got < 3 {
		t.Errorf("GET /tasks/{taskID}: %v requests counted, want the test's polling", got)
	}
	for k := range after {
		if strings.HasPrefix(k, "cube_http_requests_total") && uuidRE.MatchString(k) {
			t.Errorf("%s: a raw path in a label; want the route pattern", k)
		}
	}
	if t.Failed() {
		for _, tk := range []task.Task{crash, oom, web} {
			t.Logf("task %s: %v, records %v", tk.Cmd, d.get(t, tk.ID).State, recordTypes(d.get(t, tk.ID)))
		}
		_, _, body := d.getText(t, "/metrics")
		t.Logf("metrics:\n%s", body)
	}
}

// TestShutdownEndsStreams checks that a worker shutting down ends the streams clients hold open
// (an event stream, followed logs) rather than waiting out its drain on them. The event stream
// ends (its client reconnects); the followed logs break off with an error, since the container
// has not ended: their answer is cut short.
func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	d.running(t, tk, 30*time.Second)
	type end struct {
		path string
		err  error
	}
	ended := make(chan end, 2)
	paths := map[string]error{"/events": nil, "/tasks/" + tk.ID.String() + "/logs?follow=true": io.ErrUnexpectedEOF}
	for path := range paths {
		resp, err := client.Get(d.url + path) // its 30 s timeout is far beyond the test's wait
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v", path, err)
		}
		go func() {
			defer resp.Body.Close()
			_, err := io.Copy(io.Discard, resp.Body)
			ended <- end{path, err}
		}()
	}
	start := time.Now()
	d.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown with two open streams took %v, want them ended at once", took)
	}
	for range 2 {
		select {
		case e := <-ended:
			if want := paths[e.path]; !errors.Is(e.err, want) || (want == nil) != (e.err == nil) {
				t.Errorf("stream %s: got %v, want %v", e.path, e.err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a stream outlived the worker")
		}
	}
}

// A client that stops reading a long logs answer is cut off after the request timeout, and the
// worker logs it as such; what the client then reads ends in an error, not a clean end.
func TestLogsSlowReaderIsCutOff(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--request-timeout", "2s")
	const lineCount = 100000 // 10 MB: more than the sockets between the worker and the client hold
	tk := echoTask("--print", strings.Repeat("y", 93), "--lines", strconv.Itoa(lineCount))
	d.submit(t, tk)
	d.waitState(t, tk.ID, task.Completed, time.Minute)

	// A small receive buffer, so that the worker's writes block soon after the client stops.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		return errors.Join(err, serr)
	}}
	slow := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableCompression: true}}
	defer slow.CloseIdleConnections()
	resp, err := slow.Get(d.url + "/tasks/" + tk.ID.String() + "/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET logs: got %d", resp.StatusCode)
	}
	first := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing until the worker says it cut the client off.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(d.logs.String(), "the client took no data for the request timeout; cut off") {
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not cut the slow client off within a minute:\n%s", d.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(d.logs.String(), "sent nothing") {
		t.Errorf("the worker blamed the Engine for a slow client:\n%s", d.logs)
	}
	rest, err := io.ReadAll(resp.Body)
	got := len(first) + len(rest)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("after %d bytes: got %v, want the answer to break (unexpected EOF), not end", got, err)
	}
	if got >= lineCount*94 {
		t.Errorf("read %d bytes, the whole output: want it cut short", got)
	}
}
