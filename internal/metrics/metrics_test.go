package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 5 * time.Second

// scrape serves GET /metrics from m and returns every sample as "name{labels}" → value, the
// labels in the order the text format gives them.
func scrape(tb testing.TB, m *Metrics) map[string]float64 {
	tb.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		tb.Fatalf("GET /metrics: got %d %s, want 200 text/plain", rec.Code, rec.Header().Get("Content-Type"))
	}
	return parse(tb, rec.Body)
}

func parse(tb testing.TB, r io.Reader) map[string]float64 {
	tb.Helper()
	out, err := Flatten(r)
	if err != nil {
		tb.Fatalf("parse the metrics: %v", err)
	}
	return out
}

// startWorker runs a worker on rt, tracked by m, and m's Run, until the test ends.
func startWorker(tb testing.TB, m *Metrics, rt worker.Runtime) *worker.Worker {
	tb.Helper()
	return testworker.Start(tb, testworker.Options{Runtime: m.Runtime(rt), Setup: func(h *testworker.Harness) {
		m.Track(h.Worker)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := m.Run(ctx); err != nil {
				tb.Errorf("Run: %v", err)
			}
		})
		tb.Cleanup(func() { cancel(); wg.Wait() }) // after the worker stops
	}}).Worker
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func submit(tb testing.TB, w *worker.Worker, t task.Task) {
	tb.Helper()
	if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Running, Task: t}); err != nil {
		tb.Fatal(err)
	}
}

func running(tb testing.TB, w *worker.Worker, id uuid.UUID) task.Task {
	tb.Helper()
	var t task.Task
	waitFor(tb, "task "+id.String()+" Running", func() bool { t, _ = w.Get(id); return t.State == task.Running })
	return t
}

func TestTaskMetricsFollowTheWorker(t *testing.T) {
	m := New(Options{})
	rt := workertest.New()
	w := startWorker(t, m, rt)
	before := scrape(t, m)
	for _, k := range []string{"cube_task_starts_total", "cube_task_exits_total", "cube_task_restarts_total", "cube_task_ooms_total",
		"cube_tasks{state=Running}", "cube_tasks{state=Failed}", "cube_queue_depth", "cube_task_start_duration_seconds{phase=total}_count",
		"cube_docker_call_duration_seconds{op=start}_count", "cube_docker_call_duration_seconds{op=stats}_count"} {
		if v, ok := before[k]; !ok || v != 0 {
			t.Errorf("%s before any task: got %v (present %v), want 0", k, v, ok)
		}
	}

	// One task runs, exits with 3 and is restarted by its policy, then is killed for lack of
	// memory and gives up.
	spec := task.Task{ID: uuid.New(), Name: "m", State: task.Scheduled, Image: "cube-echo:latest", RestartPolicy: task.RestartOnFailure,
		Restart: &task.RestartSpec{MaxAttempts: 1, Delay: task.Duration(time.Millisecond)}}
	submit(t, w, spec)
	first := running(t, w, spec.ID)
	rt.Exit(first.ContainerID, 3, false)
	var second task.Task
	waitFor(t, "the restart", func() bool {
		second, _ = w.Get(spec.ID)
		return second.State == task.Running && second.ContainerID != first.ContainerID
	})
	rt.Exit(second.ContainerID, 137, true)
	waitFor(t, "the task to fail", func() bool { t, _ := w.Get(spec.ID); return t.State == task.Failed })
	// Another runs on.
	other := task.Task{ID: uuid.New(), Name: "o", State: task.Scheduled, Image: "cube-echo:latest"}
	submit(t, w, other)
	running(t, w, other.ID)

	var got map[string]float64
	waitFor(t, "the counters", func() bool {
		got = scrape(t, m)
		return got["cube_task_starts_total"] == 3 && got["cube_task_ooms_total"] == 1
	})
	for k, want := range map[string]float64{
		"cube_task_starts_total":                               3,
		"cube_task_exits_total":                                2,
		"cube_task_restarts_total":                             1,
		"cube_task_ooms_total":                                 1,
		"cube_tasks{state=Running}":                            1,
		"cube_tasks{state=Failed}":                             1,
		"cube_tasks{state=Pending}":                            0,
		"cube_task_start_duration_seconds{phase=total}_count":  2, // the two submits, not the restart
		"cube_task_start_duration_seconds{phase=create}_count": 2,
		"cube_task_start_duration_seconds{phase=start}_count":  2,
		"cube_task_start_duration_seconds{phase=pull}_count":   0, // the fake pulls nothing
		"cube_docker_call_duration_seconds{op=start}_count":    3,
	} {
		if got[k] != want {
			t.Errorf("%s: got %v, want %v", k, got[k], want)
		}
	}
	// An exit is taken from its die event; only the one with exit code 137 (the OOM kill) is
	// inspected, for the runtime's OOMKilled flag.
	if got["cube_docker_call_duration_seconds{op=inspect}_count"] != 1 {
		t.Errorf("inspect calls: got %v, want 1 (the OOM kill's)", got["cube_docker_call_duration_seconds{op=inspect}_count"])
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("go_goroutines missing: want the Go collector")
	}
}

func TestLateOOMIsTheSameExit(t *testing.T) {
	m := New(Options{})
	id := uuid.New()
	src := &fakeSource{}
	for _, c := range []task.Change{
		{Seq: 1, TaskID: id, Type: task.RecordExited},
		{Seq: 2, TaskID: id, Type: task.RecordFailed},
		{Seq: 3, TaskID: id, Type: task.RecordOOMKilled}, // the runtime's OOM event came late
		{Seq: 4, TaskID: id, Type: task.RecordStarted},
		{Seq: 5, TaskID: id, Type: task.RecordOOMKilled}, // known at the exit: the exit itself
	} {
		m.count(src, c)
	}
	if e, o := testutil.ToFloat64(m.exits), testutil.ToFloat64(m.ooms); e != 2 || o != 2 {
		t.Errorf("exits %v, OOMs %v; want 2 and 2", e, o)
	}
}

func TestRuntimeCallsAreTimed(t *testing.T) {
	m := New(Options{})
	rt := m.Runtime(workertest.New())
	ctx := context.Background()
	c, err := rt.Start(ctx, task.Task{ID: uuid.New(), Image: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt.Inspect(ctx, c.ID)
	rt.Inspect(ctx, "gone")
	rt.Stats(ctx, c.ID)
	if rc, err := rt.Logs(ctx, c.ID, task.LogOptions{}); err == nil {
		rc.Close()
	}
	rt.Exec(ctx, c.ID, []string{"true"}) // the fake has no exec: an internal error
	rt.List(ctx)
	rt.ListTask(ctx, c.TaskID)
	rt.Ping(ctx)
	rt.Stop(ctx, c.ID, 0)
	rt.Remove(ctx, c.ID)
	got := scrape(t, m)
	for _, op := range ops {
		want := 1.0
		if op == "inspect" {
			want = 2
		}
		if k := "cube_docker_call_duration_seconds{op=" + op + "}_count"; got[k] != want {
			t.Errorf("%s: got %v, want %v", k, got[k], want)
		}
	}
	for k, want := range map[string]float64{
		"cube_docker_call_errors_total{kind=not_found,op=inspect}": 1,
		"cube_docker_call_errors_total{kind=internal,op=exec}":     1,
	} {
		if got[k] != want {
			t.Errorf("%s: got %v, want %v", k, got[k], want)
		}
	}
	if n := testutil.CollectAndCount(m.callErrors); n != 2 {
		t.Errorf("error series: got %d, want 2", n)
	}
}

func TestObserveHTTP(t *testing.T) {
	m := New(Options{})
	m.ObserveHTTP("GET", "/tasks/{taskID}", 200, time.Millisecond)
	m.ObserveHTTP("GET", "/tasks/{taskID}", 200, time.Millisecond)
	m.ObserveHTTP("BREW", "", 404, time.Millisecond)
	got := scrape(t, m)
	for k, want := range map[string]float64{
		"cube_http_requests_total{code=200,method=GET,route=/tasks/{taskID}}": 2,
		"cube_http_requests_total{code=404,method=other,route=unmatched}":     1,
	} {
		if got[k] != want {
			t.Errorf("%s: got %v, want %v", k, got[k], want)
		}
	}
}

func TestStartPhases(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(ms int, typ string) task.Record {
		return task.Record{Time: at.Add(time.Duration(ms) * time.Millisecond), Type: typ}
	}
	s := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	for _, tt := range []struct {
		name    string
		records []task.Record
		started int // ms of the Started record asked about
		want    map[string]time.Duration
	}{
		{"pulled", []task.Record{rec(0, "Received"), rec(10, "Pulling"), rec(500, "Pulled"), rec(600, "Created"), rec(700, "Started")}, 700,
			map[string]time.Duration{PhasePull: s(500), PhaseCreate: s(100), PhaseStart: s(100), PhaseTotal: s(700)}},
		{"present", []task.Record{rec(0, "Received"), rec(50, "Created"), rec(80, "Started")}, 80,
			map[string]time.Duration{PhaseCreate: s(50), PhaseStart: s(30), PhaseTotal: s(80)}},
		{"restarted by an event", []task.Record{rec(0, "Received"), rec(1, "Created"), rec(2, "Started"), rec(3, "Exited"),
			rec(4, "Failed"), rec(100, "Received"), rec(110, "Created"), rec(130, "Started")}, 130,
			map[string]time.Duration{PhaseCreate: s(10), PhaseStart: s(20), PhaseTotal: s(30)}},
		{"restarted by the policy", []task.Record{rec(0, "Received"), rec(1, "Created"), rec(2, "Started"), rec(3, "Exited"),
			rec(4, "Restarting"), rec(100, "Created"), rec(130, "Started")}, 130, nil},
		{"an earlier start", []task.Record{rec(0, "Received"), rec(1, "Created"), rec(2, "Started"), rec(3, "Exited")}, 2,
			map[string]time.Duration{PhaseCreate: s(1), PhaseStart: s(1), PhaseTotal: s(2)}},
		{"records rotated away", []task.Record{rec(1, "Created"), rec(2, "Started")}, 2, nil},
		{"no such Started", []task.Record{rec(0, "Received"), rec(1, "Created"), rec(2, "Started")}, 5, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := startPhases(tt.records, at.Add(time.Duration(tt.started)*time.Millisecond))
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: got %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// fakeSource is a Source whose change stream the test drives.
type fakeSource struct {
	mu     sync.Mutex
	subs   []uint64 // the after of each Changes call
	ch     chan task.Change
	kept   []task.Change
	cancel int
}

func (f *fakeSource) Each(func(*task.Task) error) error { return nil }
func (f *fakeSource) Get(id uuid.UUID) (task.Task, error) {
	return task.Task{}, task.Errorf(task.ENOTFOUND, "no")
}
func (f *fakeSource) QueueLen() int { return 7 }
func (f *fakeSource) Changes(after uint64) ([]task.Change, <-chan task.Change, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, after)
	var backlog []task.Change
	for _, c := range f.kept {
		if c.Seq > after {
			backlog = append(backlog, c)
		}
	}
	f.ch = make(chan task.Change, 10)
	return backlog, f.ch, func() { f.mu.Lock(); f.cancel++; f.mu.Unlock() }
}

func (f *fakeSource) send(c task.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept = append(f.kept, c)
	f.ch <- c
}

// cut closes the subscription, as the worker does to a subscriber that fell behind, after
// keeping changes the subscriber has not seen.
func (f *fakeSource) cut(missed ...task.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept = append(f.kept, missed...)
	close(f.ch)
}

func (f *fakeSource) subscriptions() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.subs...)
}

func TestRunResubscribesAfterTheLastChange(t *testing.T) {
	m := New(Options{})
	src := &fakeSource{}
	m.Track(src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, "the first subscription", func() bool { return len(src.subscriptions()) == 1 })
	src.send(task.Change{Seq: 1, Type: task.RecordStarted})
	src.send(task.Change{Seq: 2, Type: task.RecordRestarting})
	waitFor(t, "two changes counted", func() bool { return testutil.ToFloat64(m.restarts) == 1 })
	src.cut(task.Change{Seq: 3, Type: task.RecordStarted}, task.Change{Seq: 4, Type: task.RecordRestarting})
	waitFor(t, "the missed changes counted", func() bool { return testutil.ToFloat64(m.restarts) == 2 })
	if subs := src.subscriptions(); len(subs) != 2 || subs[0] != 0 || subs[1] != 2 {
		t.Errorf("subscriptions: got after=%v, want 0 then 2", subs)
	}
	if s := testutil.ToFloat64(m.starts); s != 2 {
		t.Errorf("starts: got %v, want 2: nothing missed, nothing twice", s)
	}
	if q := scrape(t, m)["cube_queue_depth"]; q != 7 {
		t.Errorf("cube_queue_depth: got %v, want the source's 7", q)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil after its context ended", err)
	}
	if err := New(Options{}).Run(context.Background()); err == nil {
		t.Error("Run without Track: got nil, want an error")
	}
}
