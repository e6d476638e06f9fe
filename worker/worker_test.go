package worker

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait for the worker: long enough for a loaded CI machine under -race,
// far longer than any wait takes when the code is right.
const waitTimeout = 5 * time.Second

// waitFor polls cond every few milliseconds until it holds, and fails the test when it does not
// hold within timeout.
func waitFor(tb testing.TB, timeout time.Duration, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitState waits until the task is in state want and returns it.
func waitState(tb testing.TB, w *Worker, id uuid.UUID, want task.State) task.Task {
	tb.Helper()
	var got task.Task
	var err error
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err = w.Get(id)
		if err == nil && got.State == want {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s after %v: got state %v (err %v, Error %q), want %v", id, waitTimeout, got.State, err, got.Error, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startWorker runs a worker on rt until the test ends and waits until it is ready (see
// workertest.Start). A cleanup registered after startWorker runs before the worker stops.
func startWorker(tb testing.TB, rt Runtime, cfg Config) *Worker {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	w := New(rt, cfg)
	workertest.Start(tb, w, waitTimeout)
	return w
}

// gate is a StartHook that holds every start until it is opened, and counts starts under way.
type gate struct {
	open     chan struct{}
	openOnce sync.Once

	mu      sync.Mutex
	entered int // starts that reached the hook
	cur     int // starts in the hook now
	max     int // the most starts in the hook at once
}

func (g *gate) hook(ctx context.Context, t task.Task) error {
	g.mu.Lock()
	g.entered++
	g.cur++
	g.max = max(g.max, g.cur)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.cur--
		g.mu.Unlock()
	}()
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release opens the gate; it may be called more than once.
func (g *gate) release() { g.openOnce.Do(func() { close(g.open) }) }

func (g *gate) counts() (entered, cur, maxAtOnce int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered, g.cur, g.max
}

// gatedWorker runs a worker on a fake runtime whose starts wait for the returned gate. The gate
// opens before the worker stops, so that no start holds up the end of the test.
func gatedWorker(tb testing.TB, cfg Config) (*workertest.Runtime, *Worker, *gate) {
	tb.Helper()
	g := &gate{open: make(chan struct{})}
	rt := workertest.New()
	rt.StartHook = g.hook
	w := startWorker(tb, rt, cfg)
	tb.Cleanup(g.release)
	return rt, w, g
}

func newWorker(tb testing.TB) (*workertest.Runtime, *Worker) {
	tb.Helper()
	rt := workertest.New()
	return rt, startWorker(tb, rt, Config{Name: tb.Name()})
}

// newTask returns a task spec with a new ID and a name of its own (names of tasks that have not
// ended are unique).
func newTask() task.Task {
	id := uuid.New()
	return task.Task{
		ID:           id,
		Name:         "web-" + id.String()[:8],
		State:        task.Scheduled,
		Image:        "cube-echo:latest",
		Memory:       64 << 20,
		ExposedPorts: task.PortSet{"7777/tcp": {}},
		Env:          []string{"A=1"},
		Cmd:          []string{"--listen", ":7777"},
	}
}

func eventFor(t task.Task) task.Event {
	return task.Event{ID: uuid.New(), State: task.Running, Timestamp: time.Now(), Task: t}
}

// submit submits ev and fails the test when the worker refuses it.
func submit(tb testing.TB, w *Worker, ev task.Event) task.Task {
	tb.Helper()
	got, err := w.Submit(ev)
	if err != nil {
		tb.Fatalf("Submit: got error %v, want nil", err)
	}
	return got
}

// runTask submits a new task and waits for it to run.
func runTask(tb testing.TB, w *Worker, t task.Task) task.Task {
	tb.Helper()
	submit(tb, w, eventFor(t))
	return waitState(tb, w, t.ID, task.Running)
}

func TestSubmitStartsTask(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	spec.ExposedPorts = task.PortSet{"80/tcp": {}, "7777/tcp": {}}
	spec.PortBindings = map[string]string{"7777/tcp": "8080", "9000/udp": ""}
	before := time.Now()

	got := submit(t, w, eventFor(spec))
	// Accepted is Scheduled, as the book's worker answers: its manager keeps the answer as its copy.
	if got.ID != spec.ID || got.State != task.Scheduled {
		t.Errorf("Submit returned ID %s state %v, want ID %s state Scheduled", got.ID, got.State, spec.ID)
	}
	// The task is stored at once, before the loop gets to it.
	if stored, err := w.Get(spec.ID); err != nil {
		t.Fatalf("Get right after Submit: got error %v, want the task", err)
	} else if stored.Image != spec.Image {
		t.Errorf("stored Image: got %q, want %q", stored.Image, spec.Image)
	}

	run := waitState(t, w, spec.ID, task.Running)
	if run.ContainerID == "" {
		t.Errorf("ContainerID: got empty, want the container's ID")
	}
	if run.StartTime.Before(before) {
		t.Errorf("StartTime: got %v, want at or after %v", run.StartTime, before)
	}
	if !run.FinishTime.IsZero() || run.Error != "" || run.ExitCode != 0 {
		t.Errorf("FinishTime, Error, ExitCode: got %v, %q, %d, want zero", run.FinishTime, run.Error, run.ExitCode)
	}
	wantPorts := []string{"7777/tcp", "80/tcp", "9000/udp"}
	if keys := slices.Sorted(maps.Keys(run.HostPorts)); !slices.Equal(keys, wantPorts) {
		t.Errorf("HostPorts keys: got %v, want %v", keys, wantPorts)
	}
	for port, bindings := range run.HostPorts {
		if len(bindings) == 0 {
			t.Errorf("HostPorts[%q]: got an empty list, want at least one binding", port)
		}
	}
	if hp := run.HostPorts["7777/tcp"]; len(hp) != 1 || hp[0].HostPort != "8080" {
		t.Errorf("HostPorts[7777/tcp]: got %+v, want one binding on host port 8080", hp)
	}

	starts := rt.Starts()
	if len(starts) != 1 {
		t.Fatalf("runtime starts: got %d, want 1", len(starts))
	}
	if starts[0].ID != spec.ID || starts[0].Image != spec.Image || !slices.Equal(starts[0].Cmd, spec.Cmd) {
		t.Errorf("runtime started %+v, want the submitted spec %+v", starts[0], spec)
	}
	if running := rt.Running(); !slices.Equal(running, []string{run.ContainerID}) {
		t.Errorf("running containers: got %v, want [%s]", running, run.ContainerID)
	}
	if list := w.List(); len(list) != 1 || list[0].ID != spec.ID {
		t.Errorf("List: got %d tasks, want just %s", len(list), spec.ID)
	}
}

func TestSubmitReportedFieldsIgnored(t *testing.T) {
	// A client (or the book's manager) may send back fields the worker reports; they never
	// override what the worker observes.
	rt, w := newWorker(t)
	spec := newTask()
	spec.ContainerID = "forged"
	spec.ExitCode = 9
	spec.Error = "forged"
	spec.FinishTime = time.Now()
	spec.HostPorts = task.PortMap{"1/tcp": nil}
	run := runTask(t, w, spec)
	if run.ContainerID == "forged" || run.ExitCode != 0 || run.Error != "" || !run.FinishTime.IsZero() {
		t.Errorf("got ContainerID %q ExitCode %d Error %q FinishTime %v, want the worker's own values",
			run.ContainerID, run.ExitCode, run.Error, run.FinishTime)
	}
	if _, ok := run.HostPorts["1/tcp"]; ok {
		t.Errorf("HostPorts: got the submitted key 1/tcp, want only what the runtime published")
	}
	if starts := rt.Starts(); len(starts) != 1 || starts[0].ContainerID != "" {
		t.Errorf("runtime starts: got %+v, want one start with no ContainerID", starts)
	}
}

func TestSubmitRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*task.Event)
		want   task.Code
		msg    string // a part of the message
	}{
		{"nil event ID", func(ev *task.Event) { ev.ID = uuid.Nil }, task.EINVALID, "ID"},
		{"nil task ID", func(ev *task.Event) { ev.Task.ID = uuid.Nil }, task.EINVALID, "Task.ID"},
		{"event state too big", func(ev *task.Event) { ev.State = 5 }, task.EINVALID, "State"},
		{"event state negative", func(ev *task.Event) { ev.State = -1 }, task.EINVALID, "State"},
		{"task state too big", func(ev *task.Event) { ev.Task.State = 7 }, task.EINVALID, "Task.State"},
		{"task state negative", func(ev *task.Event) { ev.Task.State = -1 }, task.EINVALID, "Task.State"},
		{"no image", func(ev *task.Event) { ev.Task.Image = "" }, task.EINVALID, "Task.Image"},
		{"bad image", func(ev *task.Event) { ev.Task.Image = "Not An Image" }, task.EINVALID, "Task.Image"},
		{"tiny memory", func(ev *task.Event) { ev.Task.Memory = 1 }, task.EINVALID, "Task.Memory"},
		{"bad port", func(ev *task.Event) { ev.Task.ExposedPorts = task.PortSet{"http": {}} }, task.EINVALID, "Task.ExposedPorts"},
		{"bad env", func(ev *task.Event) { ev.Task.Env = []string{"NOEQUALS"} }, task.EINVALID, "Task.Env[0]"},
		{"task Running", func(ev *task.Event) { ev.Task.State = task.Running }, task.ECONFLICT, "Task.State"},
		{"task Completed", func(ev *task.Event) { ev.Task.State = task.Completed }, task.ECONFLICT, "Task.State"},
		{"task Failed", func(ev *task.Event) { ev.Task.State = task.Failed }, task.ECONFLICT, "Task.State"},
	}
	rt, w := newWorker(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := eventFor(newTask())
			tt.mutate(&ev)
			got, err := w.Submit(ev)
			if code := task.ErrorCode(err); code != tt.want {
				t.Fatalf("Submit: got error %v (kind %q), want kind %q", err, code, tt.want)
			}
			if msg := task.ErrorMessage(err); !strings.Contains(msg, tt.msg) {
				t.Errorf("message: got %q, want it to name %q", msg, tt.msg)
			}
			if got.ID != uuid.Nil {
				t.Errorf("Submit returned task %s, want the zero task", got.ID)
			}
		})
	}
	if list := w.List(); len(list) != 0 {
		t.Errorf("List after rejected events: got %d tasks, want 0", len(list))
	}
	if n := w.QueueLen(); n != 0 {
		t.Errorf("QueueLen after rejected events: got %d, want 0", n)
	}
	if starts := rt.Starts(); len(starts) != 0 {
		t.Errorf("runtime starts after rejected events: got %d, want 0", len(starts))
	}
}

func TestSubmitPendingTaskState(t *testing.T) {
	// Pending (0) and Scheduled (1) are both fine as the submitted task's state; either way the
	// worker answers with the task Scheduled.
	_, w := newWorker(t)
	for _, s := range []task.State{task.Pending, task.Scheduled} {
		spec := newTask()
		spec.State = s
		if got := submit(t, w, eventFor(spec)); got.State != task.Scheduled {
			t.Errorf("submitted as %v: got %v, want Scheduled", s, got.State)
		}
		waitState(t, w, spec.ID, task.Running)
	}
}

func TestSubmitIdempotent(t *testing.T) {
	rt, w := newWorker(t)
	ev := eventFor(newTask())
	first := submit(t, w, ev)
	second := submit(t, w, ev)
	if second.ID != first.ID {
		t.Errorf("second Submit returned task %s, want %s", second.ID, first.ID)
	}
	run := waitState(t, w, ev.Task.ID, task.Running)
	// The duplicate queued nothing, so once the queue is empty every start has happened.
	waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 0 }, "an empty queue")
	again := submit(t, w, ev)
	if again.State != task.Running || again.ContainerID != run.ContainerID {
		t.Errorf("Submit of a seen event: got state %v container %q, want the task as stored (Running, %q)",
			again.State, again.ContainerID, run.ContainerID)
	}
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}
}

func TestSubmitEventIDReusedForOtherTask(t *testing.T) {
	rt, w := newWorker(t)
	ev := eventFor(newTask())
	submit(t, w, ev)
	other := ev
	other.Task = newTask()
	got, err := w.Submit(other)
	if code := task.ErrorCode(err); code != task.ECONFLICT {
		t.Fatalf("Submit of a used event ID for another task: got %+v, %v, want a %q error", got, err, task.ECONFLICT)
	}
	if _, err := w.Get(other.Task.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Get of the other task: got %v, want %q", err, task.ENOTFOUND)
	}
	waitState(t, w, ev.Task.ID, task.Running)
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}
}

func TestSubmitBeforeRun(t *testing.T) {
	rt := workertest.New()
	w := New(rt, Config{Logger: testLogger(t)})
	spec := newTask()
	if got := submit(t, w, eventFor(spec)); got.State != task.Scheduled {
		t.Errorf("state before Run: got %v, want Scheduled", got.State)
	}
	workertest.Run(t, w)
	waitState(t, w, spec.ID, task.Running)
}

func TestRestart(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	old := runTask(t, w, spec)

	spec.RestartCount = 1
	spec.Env = []string{"A=2"}
	ev := eventFor(spec)
	if got := submit(t, w, ev); got.State != task.Running {
		t.Errorf("Submit of a restart returned state %v, want the current state Running", got.State)
	}
	var now task.Task
	waitFor(t, waitTimeout, func() bool {
		now, _ = w.Get(spec.ID)
		return now.State == task.Running && now.ContainerID != old.ContainerID
	}, "the task to run in a new container")

	if now.RestartCount != 1 {
		t.Errorf("RestartCount: got %d, want 1 (from the event)", now.RestartCount)
	}
	if !slices.Equal(now.Env, []string{"A=2"}) {
		t.Errorf("Env: got %v, want the restart event's [A=2]", now.Env)
	}
	if stops := rt.Stops(); !slices.Equal(stops, []string{old.ContainerID}) {
		t.Errorf("runtime stops: got %v, want the old container [%s]", stops, old.ContainerID)
	}
	if running := rt.Running(); !slices.Equal(running, []string{now.ContainerID}) {
		t.Errorf("running containers: got %v, want only the new one [%s]", running, now.ContainerID)
	}
	starts := rt.Starts()
	if len(starts) != 2 || starts[1].RestartCount != 1 {
		t.Errorf("runtime starts: got %d (last %+v), want 2, the second with RestartCount 1", len(starts), starts[len(starts)-1])
	}
}

func TestRestartFailedTask(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.Exit(run.ContainerID, 3, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, spec.ID, task.Failed)

	spec.RestartCount = 1
	submit(t, w, eventFor(spec))
	var now task.Task
	waitFor(t, waitTimeout, func() bool {
		now, _ = w.Get(spec.ID)
		return now.State == task.Running && now.ContainerID != run.ContainerID
	}, "the failed task to run again")
	if now.ExitCode != 0 || now.Error != "" || !now.FinishTime.IsZero() {
		t.Errorf("after restart: got ExitCode %d Error %q FinishTime %v, want them cleared", now.ExitCode, now.Error, now.FinishTime)
	}
}

func TestRestartCompletedConflicts(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	runTask(t, w, spec)
	if err := w.Stop(spec.ID); err != nil {
		t.Fatalf("Stop: got %v, want nil", err)
	}
	waitState(t, w, spec.ID, task.Completed)

	_, err := w.Submit(eventFor(spec))
	if code := task.ErrorCode(err); code != task.ECONFLICT {
		t.Errorf("restart of a Completed task: got %v, want a %q error", err, task.ECONFLICT)
	}
	if got, _ := w.Get(spec.ID); got.State != task.Completed {
		t.Errorf("state after refused restart: got %v, want Completed", got.State)
	}
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}
}

func TestStop(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	before := time.Now()

	if err := w.Stop(spec.ID); err != nil {
		t.Fatalf("Stop: got %v, want nil", err)
	}
	done := waitState(t, w, spec.ID, task.Completed)
	if done.FinishTime.Before(before) {
		t.Errorf("FinishTime: got %v, want at or after %v", done.FinishTime, before)
	}
	if done.Error != "" {
		t.Errorf("Error: got %q, want empty", done.Error)
	}
	if stops := rt.Stops(); !slices.Equal(stops, []string{run.ContainerID}) {
		t.Errorf("runtime stops: got %v, want [%s]", stops, run.ContainerID)
	}
	if running := rt.Running(); len(running) != 0 {
		t.Errorf("running containers: got %v, want none", running)
	}

	// Stopping a Completed task does nothing. (The runtime's die and destroy events of the first
	// stop pass through the task's lane first.)
	waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 0 }, "the first stop's events to be applied")
	if err := w.Stop(spec.ID); err != nil {
		t.Errorf("Stop of a Completed task: got %v, want nil", err)
	}
	if n := w.QueueLen(); n != 0 {
		t.Errorf("QueueLen after Stop of a Completed task: got %d, want 0", n)
	}
	if stops := rt.Stops(); len(stops) != 1 {
		t.Errorf("runtime stops after a second Stop: got %v, want just the first", stops)
	}
}

func TestStopUnknown(t *testing.T) {
	_, w := newWorker(t)
	err := w.Stop(uuid.New())
	if code := task.ErrorCode(err); code != task.ENOTFOUND {
		t.Errorf("Stop of an unknown task: got %v, want a %q error", err, task.ENOTFOUND)
	}
}

func TestStopWhileStarting(t *testing.T) {
	rt, w, g := gatedWorker(t, Config{})
	spec := newTask()
	submit(t, w, eventFor(spec))
	waitFor(t, waitTimeout, func() bool { e, _, _ := g.counts(); return e == 1 }, "the start to reach the runtime")

	if err := w.Stop(spec.ID); err != nil {
		t.Fatalf("Stop during the start: got %v, want nil", err)
	}
	if got, _ := w.Get(spec.ID); got.State != task.Scheduled {
		t.Errorf("state while the start is held: got %v, want Scheduled", got.State)
	}
	g.release()

	done := waitState(t, w, spec.ID, task.Completed)
	if done.ContainerID != "" {
		t.Errorf("ContainerID after the stop: got %q, want empty (the container is removed)", done.ContainerID)
	}
	if stops := rt.Stops(); len(stops) != 1 {
		t.Errorf("runtime stops: got %v, want the one container the start made", stops)
	}
	if left := rt.Containers(); len(left) != 0 {
		t.Errorf("containers after the stop: got %v, want none", left)
	}
	if running := rt.Running(); len(running) != 0 {
		t.Errorf("running containers: got %v, want none", running)
	}
}

func TestExit(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		oom       bool
		wantState task.State
		wantError string
	}{
		{"success", 0, false, task.Completed, ""},
		{"failure", 3, false, task.Failed, "exited with code 3"},
		{"oom", 137, true, task.Failed, "OOMKilled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, w := newWorker(t)
			spec := newTask()
			run := runTask(t, w, spec)
			before := time.Now()
			if err := rt.Exit(run.ContainerID, tt.code, tt.oom); err != nil {
				t.Fatal(err)
			}
			got := waitState(t, w, spec.ID, tt.wantState)
			if got.ExitCode != tt.code {
				t.Errorf("ExitCode: got %d, want %d", got.ExitCode, tt.code)
			}
			if got.Error != tt.wantError {
				t.Errorf("Error: got %q, want %q", got.Error, tt.wantError)
			}
			if got.FinishTime.Before(before) {
				t.Errorf("FinishTime: got %v, want at or after %v", got.FinishTime, before)
			}
			if got.ContainerID != run.ContainerID {
				t.Errorf("ContainerID: got %q, want the exited container %q kept", got.ContainerID, run.ContainerID)
			}
		})
	}
}

func TestContainerRemovedOutside(t *testing.T) {
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.Remove(context.Background(), run.ContainerID); err != nil {
		t.Fatal(err)
	}
	got := waitState(t, w, spec.ID, task.Failed)
	if !strings.Contains(got.Error, "container removed outside cube") {
		t.Errorf("Error: got %q, want it to say %q", got.Error, "container removed outside cube")
	}
	if got.FinishTime.IsZero() {
		t.Errorf("FinishTime: got zero, want the time the loss was noticed")
	}

	// The worker keeps working.
	runTask(t, w, newTask())
}

func TestContainerRemovedAfterExit(t *testing.T) {
	// A failed task whose container is then removed by hand keeps its first reason.
	rt, w := newWorker(t)
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.Exit(run.ContainerID, 3, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, spec.ID, task.Failed)
	if err := rt.Remove(context.Background(), run.ContainerID); err != nil {
		t.Fatal(err)
	}
	var got task.Task
	waitFor(t, waitTimeout, func() bool {
		got, _ = w.Get(spec.ID)
		return got.ContainerID == ""
	}, "the removed container to be forgotten")
	want := "exited with code 3; container removed outside cube"
	if got.State != task.Failed || got.Error != want {
		t.Errorf("got state %v Error %q, want Failed %q", got.State, got.Error, want)
	}
}

func TestStartError(t *testing.T) {
	rt := workertest.New()
	rt.StartHook = func(ctx context.Context, t task.Task) error {
		return task.Errorf(task.ENOTFOUND, "pull image nosuch:latest: repository does not exist")
	}
	w := startWorker(t, rt, Config{})
	spec := newTask()
	before := time.Now()
	submit(t, w, eventFor(spec))
	got := waitState(t, w, spec.ID, task.Failed)
	if !strings.Contains(got.Error, "repository does not exist") {
		t.Errorf("Error: got %q, want the start error's text", got.Error)
	}
	if got.FinishTime.Before(before) {
		t.Errorf("FinishTime: got %v, want at or after %v", got.FinishTime, before)
	}
	if got.ContainerID != "" || !got.StartTime.IsZero() {
		t.Errorf("ContainerID, StartTime: got %q, %v, want empty", got.ContainerID, got.StartTime)
	}
}

func TestConcurrencyBound(t *testing.T) {
	const limit, n = 2, 6
	_, w, g := gatedWorker(t, Config{Concurrency: limit})
	var ids []uuid.UUID
	for range n {
		spec := newTask()
		ids = append(ids, spec.ID)
		submit(t, w, eventFor(spec))
	}
	// Every task is Scheduled once its lane is about to take a start slot; by then the starts
	// that did not get one wait for it.
	waitFor(t, waitTimeout, func() bool {
		for _, id := range ids {
			if got, _ := w.Get(id); got.State != task.Scheduled {
				return false
			}
		}
		entered, _, _ := g.counts()
		return entered == limit
	}, "every task to be Scheduled with two starts under way")

	g.release()
	for _, id := range ids {
		waitState(t, w, id, task.Running)
	}
	entered, _, maxAtOnce := g.counts()
	if entered != n {
		t.Errorf("starts: got %d, want %d", entered, n)
	}
	if maxAtOnce != limit {
		t.Errorf("most starts at once: got %d, want %d", maxAtOnce, limit)
	}
}

func TestOneTaskInOrder(t *testing.T) {
	rt, w, g := gatedWorker(t, Config{Concurrency: 4})
	spec := newTask()
	submit(t, w, eventFor(spec))
	waitFor(t, waitTimeout, func() bool { e, _, _ := g.counts(); return e == 1 }, "the first start to reach the runtime")

	// Queued behind the held start: a restart, then a stop.
	restart := spec
	restart.RestartCount = 1
	submit(t, w, eventFor(restart))
	if err := w.Stop(spec.ID); err != nil {
		t.Fatalf("Stop: got %v, want nil", err)
	}
	if _, cur, _ := g.counts(); cur != 1 {
		t.Errorf("starts under way for one task: got %d, want 1", cur)
	}
	g.release()

	// In order: the restart replaces the first container and takes the event's RestartCount,
	// then the stop ends the task. The restart's own container is never started, since the
	// stop was accepted before it could start.
	done := waitState(t, w, spec.ID, task.Completed)
	starts := rt.Starts()
	var counts []int
	for _, s := range starts {
		counts = append(counts, s.RestartCount)
	}
	if !slices.Equal(counts, []int{0}) {
		t.Errorf("RestartCount of each start: got %v, want [0]: the restart deleted before it started is not started", counts)
	}
	if done.RestartCount != 1 {
		t.Errorf("RestartCount: got %d, want 1 (the restart was applied before the stop)", done.RestartCount)
	}
	if stops := rt.Stops(); len(stops) != 1 {
		t.Errorf("runtime stops: got %v, want one, of the only container, by the restart", stops)
	}
	if rs := records(done, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request before it could restart" {
		t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(done))
	}
	if done.ContainerID != "" || len(rt.Containers()) != 0 {
		t.Errorf("after the stop: ContainerID %q and containers %v, want none", done.ContainerID, rt.Containers())
	}
	if running := rt.Running(); len(running) != 0 {
		t.Errorf("running containers: got %v, want none", running)
	}
	if _, _, maxAtOnce := g.counts(); maxAtOnce != 1 {
		t.Errorf("most starts at once for one task: got %d, want 1", maxAtOnce)
	}
}

// deafRuntime is a fake runtime whose event stream delivers nothing, as if every event were lost.
type deafRuntime struct{ *workertest.Runtime }

func (deafRuntime) Watch(ctx context.Context, _ time.Time, _ func(task.ContainerEvent)) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestReconcileWithoutEvents(t *testing.T) {
	tests := []struct {
		name      string
		lose      func(rt *workertest.Runtime, containerID string) error
		wantState task.State
		wantError string
	}{
		{"exit", func(rt *workertest.Runtime, id string) error { return rt.Exit(id, 0, false) }, task.Completed, ""},
		{"failure", func(rt *workertest.Runtime, id string) error { return rt.Exit(id, 2, false) }, task.Failed, "exited with code 2"},
		{"removal", func(rt *workertest.Runtime, id string) error { return rt.Remove(context.Background(), id) }, task.Failed, "container removed outside cube"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := workertest.New()
			w := startWorker(t, deafRuntime{rt}, Config{ReconcileInterval: 20 * time.Millisecond})
			spec := newTask()
			run := runTask(t, w, spec)
			if err := tt.lose(rt, run.ContainerID); err != nil {
				t.Fatal(err)
			}
			got := waitState(t, w, spec.ID, tt.wantState)
			if got.Error != tt.wantError {
				t.Errorf("Error: got %q, want %q", got.Error, tt.wantError)
			}
		})
	}
}

// brokenStreamRuntime is a fake runtime whose first event stream delivers nothing and breaks
// when the test says so; later streams work.
type brokenStreamRuntime struct {
	*workertest.Runtime
	broken chan struct{} // closed to break the first stream

	mu    sync.Mutex
	calls int
}

func (r *brokenStreamRuntime) Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error {
	r.mu.Lock()
	r.calls++
	first := r.calls == 1
	r.mu.Unlock()
	if !first {
		return r.Runtime.Watch(ctx, since, fn)
	}
	select {
	case <-r.broken:
		return errors.New("unexpected EOF")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestReconcileAfterStreamBreaks(t *testing.T) {
	// The periodic reconcile is far off; what was missed while the stream was down is found by
	// the reconcile that follows subscribing again.
	rt := &brokenStreamRuntime{Runtime: workertest.New(), broken: make(chan struct{})}
	w := startWorker(t, rt, Config{ReconcileInterval: time.Hour})
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.Exit(run.ContainerID, 0, false); err != nil {
		t.Fatal(err)
	}
	close(rt.broken)
	waitState(t, w, spec.ID, task.Completed)

	// The new stream delivers events.
	next := runTask(t, w, newTask())
	if err := rt.Exit(next.ContainerID, 1, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, next.ID, task.Failed)
}

func TestReady(t *testing.T) {
	rt := workertest.New()
	w := New(rt, Config{Logger: testLogger(t), PingInterval: 10 * time.Millisecond})
	if err := w.Ready(context.Background()); task.ErrorCode(err) != task.EUNAVAILABLE || !strings.Contains(err.Error(), "recovering") {
		t.Errorf("Ready before Run has recovered the tasks: got %v, want EUNAVAILABLE saying it is recovering", err)
	}
	workertest.Run(t, w)
	waitFor(t, waitTimeout, func() bool { return w.Ready(context.Background()) == nil }, "Ready once recovered")
	pingErr := errors.New("Cannot connect to the Docker daemon")
	rt.SetPingErr(pingErr)
	// Ready answers from the worker's pings: the next one sees it.
	waitFor(t, waitTimeout, func() bool { return w.Ready(context.Background()) != nil }, "Ready to fail once the runtime does not answer")
	err := w.Ready(context.Background())
	if code := task.ErrorCode(err); code != task.EUNAVAILABLE {
		t.Fatalf("Ready with a runtime that does not answer: got %v, want a %q error", err, task.EUNAVAILABLE)
	}
	if !strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		t.Errorf("Ready error: got %q, want it to hold the cause", err)
	}
	if !errors.Is(err, pingErr) {
		t.Errorf("Ready error: got %v, want it to wrap the cause", err)
	}
}

func TestStats(t *testing.T) {
	_, w := newWorker(t)
	stats, err := w.Stats()
	if err != nil {
		t.Fatalf("Stats: got error %v, want nil", err)
	}
	if stats.TaskCount != 0 || stats.MemStats == nil {
		t.Errorf("Stats with no tasks: got TaskCount %d MemStats %v, want 0 and non-nil", stats.TaskCount, stats.MemStats)
	}

	a, b, c := newTask(), newTask(), newTask()
	runTask(t, w, a)
	runTask(t, w, b)
	runTask(t, w, c)
	if err := w.Stop(c.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, c.ID, task.Completed)
	stats, err = w.Stats()
	if err != nil {
		t.Fatalf("Stats: got error %v, want nil", err)
	}
	if stats.TaskCount != 2 {
		t.Errorf("TaskCount: got %d, want 2 (Running tasks)", stats.TaskCount)
	}
	if stats.MemStats == nil {
		t.Errorf("MemStats: got nil, want the node's memory")
	}
}

func TestRunStopsCleanly(t *testing.T) {
	// Not parallel: goleak.VerifyNone sees every goroutine in the process.
	defer goleak.VerifyNone(t)
	rt := workertest.New()
	w := New(rt, Config{Logger: testLogger(t), ReconcileInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	run := runTask(t, w, newTask())
	if err := w.Run(ctx); err == nil {
		t.Errorf("Run while running: got nil, want an error")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Run did not return within %v of cancel", waitTimeout)
	}
	// Shutting the worker down leaves its containers running.
	if running := rt.Running(); !slices.Equal(running, []string{run.ContainerID}) {
		t.Errorf("running containers after shutdown: got %v, want [%s]", running, run.ContainerID)
	}
}

// QueueLen counts what waits wherever it waits: starts waiting for a start slot, not only
// operations not yet handed to a lane.
func TestQueueLenCountsStartsWaitingForASlot(t *testing.T) {
	const n = 5
	_, w, g := gatedWorker(t, Config{Concurrency: 1})
	var ids []uuid.UUID
	for range n {
		spec := newTask()
		ids = append(ids, spec.ID)
		submit(t, w, eventFor(spec))
	}
	// One start under way (not waiting), the other four waiting for the one slot.
	waitFor(t, waitTimeout, func() bool {
		entered, _, _ := g.counts()
		return entered == 1 && w.QueueLen() == n-1
	}, "one start under way and four waiting for a slot")
	g.release()
	for _, id := range ids {
		waitState(t, w, id, task.Running)
	}
	if got := w.QueueLen(); got != 0 {
		t.Errorf("QueueLen once all run: got %d, want 0", got)
	}
}

// Operations parked until the runtime answers are counted too.
func TestQueueLenCountsParkedOperations(t *testing.T) {
	rt := workertest.New()
	var down atomic.Bool
	rt.StartHook = func(ctx context.Context, t task.Task) error {
		if down.Load() {
			return task.Errorf(task.EUNAVAILABLE, "the runtime does not answer")
		}
		return nil
	}
	w := startWorker(t, rt, Config{PingInterval: time.Hour})
	down.Store(true)
	spec := newTask()
	submit(t, w, eventFor(spec))
	// Parked, not only accepted: a stop accepted before the start is applied skips the start.
	waitFor(t, waitTimeout, func() bool { return w.unconfirmed() != "" && w.QueueLen() == 1 }, "the parked start counted")
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 2 }, "the stop behind it counted")
}

// A pause and unpause whose events were lost are found by the reconcile.
func TestReconcileFindsAPause(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, deafRuntime{rt}, Config{ReconcileInterval: 20 * time.Millisecond})
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.SetPaused(run.ContainerID, true); err != nil {
		t.Fatal(err)
	}
	got := waitTask(t, w, spec, "paused", func(t task.Task) bool { return t.Paused })
	if got.State != task.Running || !strings.Contains(got.Events[len(got.Events)-1].Type, task.RecordPaused) {
		t.Errorf("paused: got %v, last record %+v; want Running with a Paused record", got.State, got.Events[len(got.Events)-1])
	}
	if err := rt.SetPaused(run.ContainerID, false); err != nil {
		t.Fatal(err)
	}
	waitTask(t, w, spec, "unpaused", func(t task.Task) bool { return !t.Paused })
}

// The queue's bound counts what waits wherever it waits: starts waiting for a start slot fill it
// too, so that a worker that cannot start fast enough refuses more rather than piling them up.
func TestQueueCapCountsStartsWaitingForASlot(t *testing.T) {
	_, w, g := gatedWorker(t, Config{Concurrency: 1, MaxQueue: 3})
	for i := range 4 {
		submit(t, w, eventFor(newTask()))
		waitFor(t, waitTimeout, func() bool {
			entered, _, _ := g.counts()
			return entered == 1 && slotWaiters(w) == i
		}, "the start under way or waiting for the slot")
	}
	if n := w.QueueLen(); n != 3 {
		t.Fatalf("QueueLen: got %d, want 3 waiting for the slot", n)
	}
	_, err := w.Submit(eventFor(newTask()))
	if task.ErrorCode(err) != task.EUNAVAILABLE || !strings.Contains(err.Error(), "queue is full") {
		t.Fatalf("a fifth task: got %v, want EUNAVAILABLE: queue is full", err)
	}
}
