package worker

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
)

func dur(d time.Duration) task.Duration { return task.Duration(d) }

func recordTypes(t task.Task) []string {
	var out []string
	for _, r := range t.Events {
		out = append(out, r.Type)
	}
	return out
}

func countRecords(t task.Task, typ string) int {
	n := 0
	for _, r := range t.Events {
		if r.Type == typ {
			n++
		}
	}
	return n
}

func waitTask(tb testing.TB, w *Worker, id task.Task, what string, cond func(task.Task) bool) task.Task {
	tb.Helper()
	var got task.Task
	waitFor(tb, waitTimeout, func() bool {
		got, _ = w.Get(id.ID)
		return cond(got)
	}, what)
	return got
}

// midJitter makes back-offs exact: jitter 0.5 spreads by nothing.
func midJitter() float64 { return 0.5 }

func TestCrashLoopRestartsWithBackoffThenGivesUp(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartOnFailure
	spec.Restart = &task.RestartSpec{MaxAttempts: 3, Delay: dur(10 * time.Millisecond), MaxDelay: dur(25 * time.Millisecond)}
	submit(t, w, eventFor(spec))

	for i := range 4 {
		run := waitTask(t, w, spec, "running", func(t task.Task) bool { return t.State == task.Running && t.RestartCount == i })
		if err := rt.Exit(run.ContainerID, 1, false); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			waiting := waitTask(t, w, spec, "waiting to restart", func(t task.Task) bool { return t.State == task.Scheduled || t.RestartCount > i })
			if waiting.State == task.Scheduled && !strings.Contains(waiting.Error, "exited with code 1; back-off: restarting in") {
				t.Errorf("Error while waiting: got %q", waiting.Error)
			}
		}
	}
	got := waitState(t, w, spec.ID, task.Failed)
	if got.RestartCount != 3 || !strings.Contains(got.Error, "restart attempts exhausted (3)") {
		t.Errorf("got RestartCount %d Error %q, want 3 and exhausted attempts", got.RestartCount, got.Error)
	}
	var delays []string
	for _, r := range got.Events {
		if r.Type == task.RecordRestarting {
			delays = append(delays, r.Message)
		}
	}
	if strings.Join(delays, ",") != "in 10ms,in 20ms,in 25ms" {
		t.Errorf("back-offs: got %v, want in 10ms, in 20ms, in 25ms (capped)", delays)
	}
	if countRecords(got, task.RecordNotRestarting) != 1 || countRecords(got, task.RecordFailed) != 1 {
		t.Errorf("records: got %v, want NotRestarting and Failed at the end", recordTypes(got))
	}
	if n := len(rt.Containers()); n != 1 {
		t.Errorf("containers: got %d, want only the last run's (older ones removed at each restart)", n)
	}
}

func TestLongRunResetsTheBackoff(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond), ResetAfter: dur(50 * time.Millisecond)}
	submit(t, w, eventFor(spec))
	run := waitState(t, w, spec.ID, task.Running)
	rt.Exit(run.ContainerID, 1, false) // a short run: back-off 10ms
	run = waitTask(t, w, spec, "restarted", func(t task.Task) bool { return t.State == task.Running && t.RestartCount == 1 })
	rt.Exit(run.ContainerID, 1, false) // another short run: 20ms
	run = waitTask(t, w, spec, "restarted again", func(t task.Task) bool { return t.State == task.Running && t.RestartCount == 2 })
	waitFor(t, waitTimeout, func() bool { return time.Since(run.StartTime) > 60*time.Millisecond }, "a run longer than ResetAfter")
	rt.Exit(run.ContainerID, 1, false) // a long run: back to 10ms
	got := waitTask(t, w, spec, "restarted a third time", func(t task.Task) bool { return t.State == task.Running && t.RestartCount == 3 })
	var delays []string
	for _, r := range got.Events {
		if r.Type == task.RecordRestarting {
			delays = append(delays, r.Message)
		}
	}
	if strings.Join(delays, ",") != "in 10ms,in 20ms,in 10ms" {
		t.Errorf("back-offs: got %v, want in 10ms, in 20ms, then in 10ms again after the long run", delays)
	}
}

func TestStopDuringBackoffNeverRestarts(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(time.Hour)}
	submit(t, w, eventFor(spec))
	run := waitState(t, w, spec.ID, task.Running)
	rt.Exit(run.ContainerID, 0, false)
	waitState(t, w, spec.ID, task.Scheduled)
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	// Stopped, the task ends Completed, so that a manager that restarts Failed tasks leaves it be.
	got := waitState(t, w, spec.ID, task.Completed)
	if got.Error != "" || got.ContainerID != "" || got.FinishTime.IsZero() {
		t.Errorf("got Error %q ContainerID %q FinishTime %v, want no error, no container, a finish time", got.Error, got.ContainerID, got.FinishTime)
	}
	if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request while it waited to restart" {
		t.Errorf("Stopped records: got %+v in %v, want one saying it waited to restart", rs, recordTypes(got))
	}
	w.mu.Lock()
	r := w.runners[spec.ID]
	armed := r != nil && r.restart != nil
	w.mu.Unlock()
	if armed {
		t.Error("the pending restart is still armed")
	}
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("starts: got %d, want 1", n)
	}
	// Completed is the end: a restart event for the stopped task is refused.
	if _, err := w.Submit(eventFor(spec)); task.ErrorCode(err) != task.ECONFLICT {
		t.Errorf("restart event for a stopped task: got %v, want ECONFLICT", err)
	}
}

func TestStartFailureRestartsByPolicy(t *testing.T) {
	rt := workertest.New()
	var calls atomic.Int32
	rt.StartHook = func(ctx context.Context, t task.Task) error {
		if calls.Add(1) == 1 {
			return task.Errorf(task.ENOTFOUND, "image pull failed: %s: not found", t.Image)
		}
		return nil
	}
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartOnFailure
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
	submit(t, w, eventFor(spec))
	got := waitTask(t, w, spec, "running after a retry", func(t task.Task) bool { return t.State == task.Running })
	if got.RestartCount != 1 || got.Error != "" {
		t.Errorf("got RestartCount %d Error %q, want 1 and no error", got.RestartCount, got.Error)
	}
}

func TestHealthExecUnhealthyRestarts(t *testing.T) {
	rt := workertest.New()
	var healthy atomic.Bool
	healthy.Store(true)
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		if healthy.Load() {
			return 0, "fine", nil
		}
		return 1, "broken", nil
	}
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartOnFailure
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond), Retries: 2}
	submit(t, w, eventFor(spec))
	first := waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	if first.LastHealthCheck == nil || !first.LastHealthCheck.Healthy || first.LastHealthCheck.Output != "fine" {
		t.Errorf("LastHealthCheck: got %+v, want a healthy result saying fine", first.LastHealthCheck)
	}
	healthy.Store(false)
	// Still unhealthy, the new container fails its checks too, within tens of milliseconds: a
	// poll on a loaded machine may first see a later restart.
	got := waitTask(t, w, spec, "restarted after turning unhealthy", func(t task.Task) bool {
		return t.RestartCount >= 1 && t.State == task.Running
	})
	healthy.Store(true)
	if got.ContainerID == first.ContainerID {
		t.Error("the restart kept the unhealthy container")
	}
	for _, typ := range []string{task.RecordHealthy, task.RecordUnhealthy, task.RecordKilling, task.RecordKilled, task.RecordRestarting} {
		if countRecords(got, typ) == 0 {
			t.Errorf("records: got %v, want a %s", recordTypes(got), typ)
		}
	}
	waitTask(t, w, spec, "healthy again", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
}

func TestHealthStartPeriodAndNoPolicy(t *testing.T) {
	rt := workertest.New()
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) { return 1, "not yet", nil }
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond),
		Retries: 1, StartPeriod: dur(150 * time.Millisecond)}
	submit(t, w, eventFor(spec))
	run := waitState(t, w, spec.ID, task.Running)
	got := waitTask(t, w, spec, "a failed check", func(t task.Task) bool { return t.LastHealthCheck != nil })
	if time.Since(run.StartTime) < 140*time.Millisecond && got.HealthStatus != task.HealthStarting {
		t.Errorf("within the start period: got %q, want starting (failures do not count yet)", got.HealthStatus)
	}
	got = waitTask(t, w, spec, "unhealthy", func(t task.Task) bool { return t.HealthStatus == task.HealthUnhealthy })
	if got.State != task.Running || len(rt.Stops()) != 0 {
		t.Errorf("with no restart policy: got state %v and stops %v, want it left running", got.State, rt.Stops())
	}
}

func TestRuntimeHealthEventsForImageHealthcheck(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.HealthCheck = ""
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
	submit(t, w, eventFor(spec))
	run := waitState(t, w, spec.ID, task.Running)
	waitFor(t, waitTimeout, func() bool {
		return rt.Health(run.ContainerID, task.HealthHealthy) == nil && healthOf(w, spec) == task.HealthHealthy
	},
		"the runtime's healthy status to show")
	rt.Health(run.ContainerID, task.HealthUnhealthy)
	got := waitTask(t, w, spec, "restarted", func(t task.Task) bool { return t.RestartCount == 1 && t.State == task.Running })
	if !strings.HasPrefix(got.Events[len(got.Events)-1].Type, task.RecordStarted) || countRecords(got, task.RecordUnhealthy) != 1 {
		t.Errorf("records: got %v", recordTypes(got))
	}
}

func healthOf(w *Worker, spec task.Task) string {
	t, _ := w.Get(spec.ID)
	return t.HealthStatus
}

func TestCapacityAndCaps(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Capacity: Capacity{CPU: 2, Memory: 1 << 30}})
	a := newTask()
	a.Memory, a.Cpu = 600<<20, 1.5
	runTask(t, w, a)
	b := newTask()
	b.Memory = 600 << 20
	if _, err := w.Submit(eventFor(b)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "Task.Memory") {
		t.Errorf("memory over capacity: got %v, want ECONFLICT naming Task.Memory", err)
	}
	b.Memory, b.Cpu = 100<<20, 1
	if _, err := w.Submit(eventFor(b)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "Task.Cpu") {
		t.Errorf("cpu over capacity: got %v, want ECONFLICT naming Task.Cpu", err)
	}
	// A restart of the same task does not count its own claim twice.
	a2 := a
	submit(t, w, eventFor(a2))
}

func TestMaxTasksForgetsEndedTasks(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{MaxTasks: 2})
	a := runTask(t, w, newTask())
	b := runTask(t, w, newTask())
	if _, err := w.Submit(eventFor(newTask())); task.ErrorCode(err) != task.ECONFLICT {
		t.Fatalf("a third task with two running: got %v, want ECONFLICT", err)
	}
	w.Stop(a.ID)
	waitState(t, w, a.ID, task.Completed)
	c := newTask()
	submit(t, w, eventFor(c))
	if _, err := w.Get(a.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("the ended task: got %v, want it forgotten", err)
	}
	if _, err := w.Get(b.ID); err != nil {
		t.Errorf("the running task: %v", err)
	}
}

func TestQueueCap(t *testing.T) {
	rt := workertest.New()
	w := New(rt, Config{MaxQueue: 2, Logger: testLogger(t)}) // not running: nothing drains the queue
	submit(t, w, eventFor(newTask()))
	submit(t, w, eventFor(newTask()))
	_, err := w.Submit(eventFor(newTask()))
	if task.ErrorCode(err) != task.EUNAVAILABLE || !strings.Contains(err.Error(), "queue is full") {
		t.Fatalf("got %v, want EUNAVAILABLE: queue is full", err)
	}
	if n := len(w.List()); n != 2 {
		t.Errorf("tasks: got %d, want 2 (the refused one left nothing behind)", n)
	}
}

func TestExitReasons(t *testing.T) {
	tests := []struct {
		c    task.Container
		want string
	}{
		{task.Container{ExitCode: 3}, "exited with code 3"},
		{task.Container{ExitCode: 137, OOMKilled: true}, "OOMKilled"},
		{task.Container{ExitCode: 137}, "killed by signal 9 (SIGKILL) (exit code 137)"},
		{task.Container{ExitCode: 143}, "killed by signal 15 (SIGTERM) (exit code 143)"},
		{task.Container{ExitCode: 255}, "exited with code 255"},
	}
	for _, tt := range tests {
		if got := exitReason(tt.c); got != tt.want {
			t.Errorf("exitReason(%+v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}

// The Engine's oom event may come after its die event, and its OOMKilled flag may be unset: the
// late event still makes the reason OOMKilled, and never 137 alone.
func TestLateOOMEvent(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{})
	spec := newTask()
	run := runTask(t, w, spec)
	if err := rt.Exit(run.ContainerID, 137, false); err != nil {
		t.Fatal(err)
	}
	got := waitState(t, w, spec.ID, task.Failed)
	if !strings.HasPrefix(got.Error, "killed by signal 9") {
		t.Fatalf("before the oom event: got %q, want killed by signal 9", got.Error)
	}
	rt.OOM(run.ContainerID)
	got = waitTask(t, w, spec, "OOMKilled", func(t task.Task) bool { return t.Error == "OOMKilled" })
	if countRecords(got, task.RecordOOMKilled) != 1 {
		t.Errorf("records: %v, want one OOMKilled", recordTypes(got))
	}
}

// An oom event before the die event counts even when the runtime's flag is unset.
func TestEarlyOOMEvent(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{})
	spec := newTask()
	run := runTask(t, w, spec)
	// Both events reach the task's lane in the order the runtime sent them.
	rt.OOM(run.ContainerID)
	rt.Exit(run.ContainerID, 137, false)
	got := waitState(t, w, spec.ID, task.Failed)
	if got.Error != "OOMKilled" {
		t.Errorf("got %q, want OOMKilled", got.Error)
	}
}

func records(t task.Task, typ string) []task.Record {
	var out []task.Record
	for _, r := range t.Events {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// A stop ends every task that has not ended Completed, with a Stopped record saying what it was
// doing; none of them starts again.
func TestStopEndsUnendedTasksCompleted(t *testing.T) {
	t.Run("Running", func(t *testing.T) {
		rt := workertest.New()
		w := startWorker(t, rt, Config{})
		spec := newTask()
		spec.RestartPolicy = task.RestartAlways
		run := runTask(t, w, spec)
		if err := w.Stop(spec.ID); err != nil {
			t.Fatal(err)
		}
		got := waitState(t, w, spec.ID, task.Completed)
		if got.ContainerID != "" || got.Error != "" || got.FinishTime.IsZero() {
			t.Errorf("got ContainerID %q Error %q FinishTime %v, want no container, no error, a finish time", got.ContainerID, got.Error, got.FinishTime)
		}
		if want := []string{task.RecordKilling, task.RecordKilled, task.RecordStopped}; !slices.Equal(recordTypes(got)[len(got.Events)-3:], want) {
			t.Errorf("records: got %v, want them to end %v", recordTypes(got), want)
		}
		if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request while it ran" {
			t.Errorf("Stopped records: got %+v", rs)
		}
		if slices.Contains(rt.Running(), run.ContainerID) || len(rt.Containers()) != 0 {
			t.Errorf("containers left: %+v", rt.Containers())
		}
	})
	// Deleted while its start waits for a start slot, a task is never started.
	t.Run("Scheduled waiting to start", func(t *testing.T) {
		rt, w, g := gatedWorker(t, Config{Concurrency: 1})
		busy := newTask()
		submit(t, w, eventFor(busy))
		waitFor(t, waitTimeout, func() bool { entered, _, _ := g.counts(); return entered == 1 }, "the first start to take the only slot")
		spec := newTask()
		if got := submit(t, w, eventFor(spec)); got.State != task.Scheduled {
			t.Fatalf("submitted: got %v, want Scheduled", got.State)
		}
		if err := w.Stop(spec.ID); err != nil {
			t.Fatal(err)
		}
		g.release()
		got := waitState(t, w, spec.ID, task.Completed)
		if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request before it started" {
			t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(got))
		}
		waitState(t, w, busy.ID, task.Running)
		for _, st := range rt.Starts() {
			if st.ID == spec.ID {
				t.Errorf("the deleted task was started")
			}
		}
	})
	// A task can be Pending or Scheduled without a container only until its start is applied:
	// stored so, with its stop accepted before the worker runs, the stop is applied first.
	for _, state := range []task.State{task.Pending, task.Scheduled} {
		t.Run(state.String(), func(t *testing.T) {
			rt := workertest.New()
			store := &MemoryStore{}
			spec := newTask()
			spec.State = state
			store.Put(spec)
			w := New(rt, Config{Store: store, Logger: testLogger(t)})
			if err := w.Stop(spec.ID); err != nil {
				t.Fatal(err)
			}
			workertest.Run(t, w)
			got := waitState(t, w, spec.ID, task.Completed)
			if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request before it started" {
				t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(got))
			}
			waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 0 }, "an empty queue")
			if n := len(rt.Starts()); n != 0 {
				t.Errorf("starts: got %d, want 0", n)
			}
		})
	}
}

// A stop of a task that has ended removes its container and leaves its state as it is.
func TestStopKeepsEndedState(t *testing.T) {
	for _, tt := range []struct {
		exit  int
		state task.State
		error string
	}{
		{0, task.Completed, ""},
		{3, task.Failed, "exited with code 3"},
	} {
		t.Run(tt.state.String(), func(t *testing.T) {
			rt := workertest.New()
			w := startWorker(t, rt, Config{})
			spec := newTask()
			run := runTask(t, w, spec)
			rt.Exit(run.ContainerID, tt.exit, false)
			ended := waitState(t, w, spec.ID, tt.state)
			if ended.ContainerID == "" {
				t.Fatal("the ended task's container was not kept for its logs")
			}
			if err := w.Stop(spec.ID); err != nil {
				t.Fatal(err)
			}
			got := waitTask(t, w, spec, "container removed", func(t task.Task) bool { return t.ContainerID == "" })
			if got.State != tt.state || got.Error != tt.error || got.ExitCode != tt.exit || !got.FinishTime.Equal(ended.FinishTime) {
				t.Errorf("got %v Error %q ExitCode %d FinishTime %v, want %v %q %d %v as it ended",
					got.State, got.Error, got.ExitCode, got.FinishTime, tt.state, tt.error, tt.exit, ended.FinishTime)
			}
			if n := countRecords(got, task.RecordStopped); n != 0 {
				t.Errorf("records: got %v, want no Stopped record for a task that had ended", recordTypes(got))
			}
			if len(rt.Containers()) != 0 {
				t.Errorf("containers left: %+v", rt.Containers())
			}
		})
	}
}

// A run that ends by itself while a stop of it is accepted but not yet applied does not
// restart: the stop decides, and the task ends Completed with how the run ended in its records.
func TestExitWhileStoppingEndsCompleted(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartOnFailure
	spec.Restart = &task.RestartSpec{Delay: dur(time.Millisecond)}
	run := runTask(t, w, spec)
	// What Stop notes before its operation is applied; the operation itself is not queued, so
	// that the exit is handled first.
	w.mu.Lock()
	w.runnerLocked(spec.ID).stopping = true
	w.mu.Unlock()
	rt.Exit(run.ContainerID, 1, false)
	got := waitState(t, w, spec.ID, task.Completed)
	if got.ExitCode != 1 || got.Error != "" {
		t.Errorf("got ExitCode %d Error %q, want 1 and no error", got.ExitCode, got.Error)
	}
	if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request; the run had already ended (exited with code 1)" {
		t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(got))
	}
	if n := countRecords(got, task.RecordRestarting); n != 0 || len(rt.Starts()) != 1 {
		t.Errorf("restarts: %d records, %d starts; want none after the first start", n, len(rt.Starts()))
	}
}
func TestRestartCountSaturates(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.RestartCount = math.MaxInt
	spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
	submit(t, w, eventFor(spec))
	run := waitState(t, w, spec.ID, task.Running)
	if err := rt.Exit(run.ContainerID, 1, false); err != nil {
		t.Fatal(err)
	}
	got := waitTask(t, w, spec, "restarted", func(t task.Task) bool {
		return t.State == task.Running && t.ContainerID != run.ContainerID
	})
	if got.RestartCount != math.MaxInt {
		t.Errorf("RestartCount after a restart from the maximum: got %d, want %d (saturated)", got.RestartCount, math.MaxInt)
	}
}

// A check the runtime cannot carry out counts for nothing: the task stays healthy, is not
// stopped, and takes up checking when the runtime answers again.
func TestHealthExecNotCarriedOutIsNoFailure(t *testing.T) {
	for _, code := range []task.Code{task.EUNAVAILABLE, task.ENOTFOUND, task.ECONFLICT} {
		t.Run(string(code), func(t *testing.T) {
			rt := workertest.New()
			var broken atomic.Bool
			var unknown atomic.Int64
			rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
				if broken.Load() {
					unknown.Add(1)
					return 0, "", task.Errorf(code, "exec in container: the Engine did not answer")
				}
				return 0, "fine", nil
			}
			w := startWorker(t, rt, Config{Rand: midJitter})
			spec := newTask()
			spec.RestartPolicy = task.RestartOnFailure
			spec.Restart = &task.RestartSpec{Delay: dur(10 * time.Millisecond)}
			spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond), Retries: 2}
			submit(t, w, eventFor(spec))
			first := waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
			broken.Store(true)
			waitFor(t, waitTimeout, func() bool { return unknown.Load() >= 10 }, "ten checks that could not be carried out")
			got, _ := w.Get(spec.ID)
			if got.HealthStatus != task.HealthHealthy || got.State != task.Running || got.ContainerID != first.ContainerID ||
				got.LastHealthCheck == nil || !got.LastHealthCheck.Healthy || len(rt.Stops()) != 0 {
				t.Fatalf("after checks that could not run: got %v %q, last check %+v, stops %v; want Running, healthy, untouched",
					got.State, got.HealthStatus, got.LastHealthCheck, rt.Stops())
			}
			broken.Store(false)
			after := waitTask(t, w, spec, "checked again", func(t task.Task) bool {
				return t.LastHealthCheck != nil && t.LastHealthCheck.Time.After(got.LastHealthCheck.Time)
			})
			if after.HealthStatus != task.HealthHealthy || after.RestartCount != 0 || countRecords(after, task.RecordUnhealthy) != 0 {
				t.Errorf("after the runtime answered again: got %q, %d restarts, records %v; want healthy, no restart, no Unhealthy",
					after.HealthStatus, after.RestartCount, recordTypes(after))
			}
		})
	}
}

// While the runtime is known not to answer, a failed check of any kind is no failure either: the
// container's state is unknown then.
func TestHealthFailsWhileRuntimeDownDoNotCount(t *testing.T) {
	rt := workertest.New()
	var failing atomic.Bool
	var seen atomic.Int64
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		if failing.Load() {
			seen.Add(1)
			return 1, "broken", nil
		}
		return 0, "fine", nil
	}
	w := startWorker(t, rt, Config{Rand: midJitter, PingInterval: 10 * time.Millisecond})
	spec := newTask()
	spec.RestartPolicy = task.RestartOnFailure
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond), Retries: 2}
	submit(t, w, eventFor(spec))
	waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "no answer"))
	waitTask(t, w, spec, "unconfirmed", func(t task.Task) bool { return t.Unconfirmed != "" })
	failing.Store(true)
	waitFor(t, waitTimeout, func() bool { return seen.Load() >= 10 }, "ten failed checks while the runtime is down")
	if got, _ := w.Get(spec.ID); got.HealthStatus != task.HealthHealthy || len(rt.Stops()) != 0 {
		t.Fatalf("while the runtime is down: got %q, stops %v; want healthy still, no stop", got.HealthStatus, rt.Stops())
	}
}

// A container paused behind the worker's back is reported paused, with no health and no checks
// (so it is not killed for failing them), and unpaused again; it is never restarted.
func TestPausedContainerIsReportedAndNotChecked(t *testing.T) {
	rt := workertest.New()
	var checks atomic.Int64
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		checks.Add(1)
		return 0, "fine", nil
	}
	w := startWorker(t, rt, Config{Rand: midJitter})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond), Retries: 1}
	submit(t, w, eventFor(spec))
	run := waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	backlog, changes, cancel := w.Changes(w.LastChange())
	defer cancel()
	if len(backlog) != 0 {
		t.Fatalf("backlog: %v", backlog)
	}

	if err := rt.SetPaused(run.ContainerID, true); err != nil {
		t.Fatal(err)
	}
	paused := waitTask(t, w, spec, "paused", func(t task.Task) bool { return t.Paused })
	if paused.State != task.Running || paused.HealthStatus != "" || countRecords(paused, task.RecordPaused) != 1 {
		t.Errorf("paused: got %v %q, records %v; want Running, no health, a Paused record", paused.State, paused.HealthStatus, recordTypes(paused))
	}
	if c := nextChange(t, changes); c.Type != task.RecordPaused || c.HealthStatus != "" {
		t.Errorf("change: got %+v, want Paused with no health", c)
	}
	// No checks while paused: the count settles.
	n := checks.Load()
	waitFor(t, waitTimeout, func() bool {
		before := checks.Load()
		time.Sleep(50 * time.Millisecond)
		return checks.Load() == before
	}, "checks to stop")
	if got := checks.Load(); got > n+1 {
		t.Errorf("checks while paused: %d more, want at most the one under way", got-n)
	}

	if err := rt.SetPaused(run.ContainerID, false); err != nil {
		t.Fatal(err)
	}
	got := waitTask(t, w, spec, "unpaused and healthy", func(t task.Task) bool { return !t.Paused && t.HealthStatus == task.HealthHealthy })
	if got.ContainerID != run.ContainerID || got.RestartCount != 0 || len(rt.Stops()) != 0 || countRecords(got, task.RecordUnpaused) != 1 {
		t.Errorf("unpaused: got container %s, %d restarts, stops %v, records %v; want the same container, untouched",
			got.ContainerID, got.RestartCount, rt.Stops(), recordTypes(got))
	}
	if c := nextChange(t, changes); c.Type != task.RecordUnpaused {
		t.Errorf("change: got %+v, want Unpaused", c)
	}
}

func nextChange(tb testing.TB, ch <-chan task.Change) task.Change {
	tb.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(waitTimeout):
		tb.Fatal("no change within the timeout")
	}
	return task.Change{}
}

// A stop the runtime refuses (an error that is not an outage) leaves the task as it was: a
// running task keeps its health check, and one waiting out a back-off still restarts when it
// ends.
func TestRefusedStopLeavesTheTaskAsItWas(t *testing.T) {
	rt := workertest.New()
	var execs atomic.Int64
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		execs.Add(1)
		return 0, "fine", nil
	}
	store := &MemoryStore{}
	w := startWorker(t, rt, Config{Store: store, Rand: midJitter})
	refused := task.Errorf(task.ECONFLICT, "the container cannot be stopped now")
	t.Cleanup(func() { rt.SetErrs(nil, nil) })

	checked := newTask()
	checked.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond)}
	submit(t, w, eventFor(checked))
	waitTask(t, w, checked, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	rt.SetErrs(refused, nil)
	if err := w.Stop(checked.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the refused stop to be applied")
	if got, _ := w.Get(checked.ID); got.State != task.Running {
		t.Fatalf("after a refused stop: got state %v, want Running", got.State)
	}
	before := execs.Load()
	waitFor(t, waitTimeout, func() bool { return execs.Load() >= before+3 }, "health checks to go on after the refused stop")

	rt.SetErrs(nil, nil)
	backingOff := newTask()
	backingOff.RestartPolicy = task.RestartAlways
	backingOff.Restart = &task.RestartSpec{Delay: dur(50 * time.Millisecond)}
	run := runTask(t, w, backingOff)
	rt.SetErrs(refused, nil)
	if err := rt.Exit(run.ContainerID, 1, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, backingOff.ID, task.Scheduled)
	if err := w.Stop(backingOff.ID); err != nil {
		t.Fatal(err)
	}
	waitTask(t, w, backingOff, "restarted after its back-off, the stop refused", func(t task.Task) bool {
		return t.State == task.Running && t.RestartCount == 1
	})
}

// A stop parked because the runtime does not answer ends the task's health check, as it did
// before stops left a refused stop's task as it was: the check's verdict cannot matter any more
// (the stop applies once the runtime answers), and its results would pile up behind the stop for
// the whole outage.
func TestParkedStopEndsTheHealthCheck(t *testing.T) {
	rt := workertest.New()
	var hold atomic.Bool
	entered, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		if hold.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done()
			select {
			case cancelled <- struct{}{}:
			default:
			}
			return 0, "", ctx.Err()
		}
		return 0, "fine", nil
	}
	w := startWorker(t, rt, Config{PingInterval: time.Hour})
	t.Cleanup(func() { rt.SetErrs(nil, nil) })
	spec := newTask()
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond),
		Timeout: dur(time.Hour)}
	submit(t, w, eventFor(spec))
	waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	hold.Store(true)
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("no health check under way")
	}
	rt.SetErrs(task.Errorf(task.EUNAVAILABLE, "the runtime does not answer"), nil)
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(waitTimeout):
		t.Fatal("the health check under way was not ended by the parked stop")
	}
	if got, _ := w.Get(spec.ID); got.State != task.Running {
		t.Fatalf("while the stop is parked: got state %v, want Running", got.State)
	}
}

// A stop parked while the runtime does not answer ends the health check; when the runtime
// answers again and refuses the stop, the task goes on running, and its health check starts
// again (as a stop refused at once leaves it running).
func TestParkedThenRefusedStopResumesTheHealthCheck(t *testing.T) {
	rt := workertest.New()
	var checks atomic.Int64
	rt.ExecHook = func(ctx context.Context, id string, cmd []string) (int, string, error) {
		checks.Add(1)
		return 0, "fine", nil
	}
	w := startWorker(t, rt, Config{PingInterval: 20 * time.Millisecond})
	t.Cleanup(func() { rt.SetErrs(nil, nil) })
	spec := newTask()
	spec.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"check"}, Interval: dur(10 * time.Millisecond),
		Timeout: dur(time.Second)}
	submit(t, w, eventFor(spec))
	waitTask(t, w, spec, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })

	rt.SetErrs(task.Errorf(task.EUNAVAILABLE, "the runtime does not answer"), nil)
	if err := w.Stop(spec.ID); err != nil {
		t.Fatal(err)
	}
	// Parked: the stop waits, and has ended the check (parkStop cancels it before it parks).
	waitFor(t, waitTimeout, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		r := w.runners[spec.ID]
		return r != nil && r.parked
	}, "the stop to park")
	rt.SetErrs(task.Errorf(task.ECONFLICT, "removal of the container is already in progress"), nil)
	waitFor(t, waitTimeout, func() bool { return w.QueueLen() == 0 }, "the stop, replayed, refused")
	if got, _ := w.Get(spec.ID); got.State != task.Running {
		t.Fatalf("after the refused stop: got state %v, want Running", got.State)
	}
	after := checks.Load()
	waitFor(t, waitTimeout, func() bool { return checks.Load() >= after+3 }, "the health check to run again")
}
