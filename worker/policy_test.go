package worker

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
)

// allowances lists each kind of host access: a task that asks for it, and the policy without it.
var allowances = []struct {
	name  string
	flag  string
	ask   func(*task.Task)
	allow func(*task.Policy)
}{
	{"privileged", "--allow-privileged", func(t *task.Task) { t.Privileged = true }, func(p *task.Policy) { p.AllowPrivileged = true }},
	{"host network", "--allow-host-network", func(t *task.Task) { t.NetworkMode = "host"; t.ExposedPorts = nil },
		func(p *task.Policy) { p.AllowHostNetwork = true }},
	{"host pid", "--allow-host-pid", func(t *task.Task) { t.PidMode = "host" }, func(p *task.Policy) { p.AllowHostPID = true }},
	{"cap add", "--allow-cap-add", func(t *task.Task) { t.CapAdd = []string{"NET_ADMIN"} }, func(p *task.Policy) { p.AllowCapAdd = true }},
	{"devices", "--allow-devices", func(t *task.Task) { t.Devices = []string{"/dev/fuse"} }, func(p *task.Policy) { p.AllowDevices = true }},
	{"binds", "--allow-bind-mounts", func(t *task.Task) { t.Binds = []string{"/srv/data/app:/data"} },
		func(p *task.Policy) { p.AllowBindMounts = []string{"/srv/data"} }},
}

// runUntilStopped runs a worker on rt and returns it with a function that stops it (and is
// called at the end of the test, too).
func runUntilStopped(tb testing.TB, rt Runtime, cfg Config) (*Worker, func()) {
	tb.Helper()
	cfg.Logger = testLogger(tb)
	w := New(rt, cfg)
	return w, workertest.Run(tb, w)
}

func hasRecord(t task.Task, typ, part string) bool {
	return slices.ContainsFunc(t.Events, func(r task.Record) bool { return r.Type == typ && strings.Contains(r.Message, part) })
}

// A task accepted with an allowance, whose worker restarts without it: its running container is
// left to run, with a record saying so; when the container ends, the task is not started again
// but ends Failed, with an Error naming the flag.
func TestRevokedAllowanceAcrossRestart(t *testing.T) {
	for _, a := range allowances {
		t.Run(a.name, func(t *testing.T) {
			rt := workertest.New()
			store := &MemoryStore{}
			var granted task.Policy
			a.allow(&granted)
			first, stopFirst := runUntilStopped(t, rt, Config{Store: store, Policy: granted})
			spec := newTask()
			spec.RestartPolicy = task.RestartAlways
			spec.Restart = &task.RestartSpec{Delay: dur(time.Millisecond)}
			a.ask(&spec)
			run := runTask(t, first, spec)
			stopFirst()

			w, _ := runUntilStopped(t, rt, Config{Store: store})
			got := waitTask(t, w, spec, "its running container reported", func(t task.Task) bool {
				return hasRecord(t, task.RecordNotRestarting, a.flag)
			})
			if got.State != task.Running || got.ContainerID != run.ContainerID || !slices.Contains(rt.Running(), run.ContainerID) {
				t.Fatalf("after the restart: state %v container %s (running %v), want Running in %s, left to run",
					got.State, got.ContainerID, rt.Running(), run.ContainerID)
			}
			if err := rt.Exit(run.ContainerID, 1, false); err != nil {
				t.Fatal(err)
			}
			got = waitState(t, w, spec.ID, task.Failed)
			if !strings.Contains(got.Error, a.flag) || !strings.Contains(got.Error, "not started") {
				t.Errorf("Error: got %q, want it to say the task was not started and name %s", got.Error, a.flag)
			}
			if !hasRecord(got, task.RecordFailed, a.flag) {
				t.Errorf("records: got %v, want a Failed record naming %s", got.Events, a.flag)
			}
			if n := len(rt.Starts()); n != 1 {
				t.Errorf("starts: got %d, want 1 (no start without the allowance)", n)
			}
		})
	}
}

// A start accepted with an allowance and not yet applied when the worker stopped is replayed by
// the next worker; without the allowance, the replay does not start it.
func TestRevokedAllowanceStopsReplay(t *testing.T) {
	for _, a := range allowances {
		t.Run(a.name, func(t *testing.T) {
			rt := workertest.New()
			store := &MemoryStore{}
			var granted task.Policy
			a.allow(&granted)
			spec := newTask()
			a.ask(&spec)
			// Accepted, never run: the start order waits in the store.
			submit(t, New(rt, Config{Store: store, Policy: granted, Logger: testLogger(t)}), eventFor(spec))

			w, _ := runUntilStopped(t, rt, Config{Store: store})
			got := waitState(t, w, spec.ID, task.Failed)
			if !strings.Contains(got.Error, a.flag) {
				t.Errorf("Error: got %q, want it to name %s", got.Error, a.flag)
			}
			if n := len(rt.Starts()); n != 0 {
				t.Errorf("starts: got %d, want none", n)
			}
			waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the replayed order to be done")
		})
	}
}

// A bind source is checked again before every start: a directory replaced by a link out of the
// allowed prefix after the task was accepted stops its restart.
func TestBindSourceCheckedBeforeEachStart(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"allowed/data", "outside"} {
		if err := os.MkdirAll(root+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rt := workertest.New()
	w := startWorker(t, rt, Config{Rand: midJitter, Policy: task.Policy{AllowBindMounts: []string{root + "/allowed"}, Resolve: hostpath.Resolve}})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Restart = &task.RestartSpec{Delay: dur(time.Millisecond)}
	spec.Binds = []string{root + "/allowed/data:/data"}
	run := runTask(t, w, spec)

	// Outside now: refused at once for a new task …
	if err := os.Rename(root+"/allowed/data", root+"/allowed/was"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", root+"/allowed/data"); err != nil {
		t.Fatal(err)
	}
	other := newTask()
	other.Binds = spec.Binds
	if _, err := w.Submit(eventFor(other)); task.ErrorCode(err) != task.EFORBIDDEN || !strings.Contains(err.Error(), "Task.Binds[0]:") {
		t.Errorf("Submit through the link: got %v, want EFORBIDDEN naming Task.Binds[0]", err)
	}
	// … and the accepted one does not start again.
	if err := rt.Exit(run.ContainerID, 1, false); err != nil {
		t.Fatal(err)
	}
	got := waitState(t, w, spec.ID, task.Failed)
	if !strings.Contains(got.Error, "Task.Binds[0]:") || !strings.Contains(got.Error, root+"/outside") {
		t.Errorf("Error: got %q, want it to name Task.Binds[0] and where the link leads", got.Error)
	}
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("starts: got %d, want 1", n)
	}
}

// A start the runtime refuses as forbidden (a bind source that, pinned, led out of the allowed
// paths) fails the task for good: no restart.
func TestForbiddenStartIsNotRetried(t *testing.T) {
	rt := workertest.New()
	rt.StartHook = func(context.Context, task.Task) error {
		return task.Errorf(task.EFORBIDDEN, "Task.Binds[0]: host path %q leads to %q", "/srv/data/x", "/etc")
	}
	w := startWorker(t, rt, Config{Policy: task.Policy{AllowBindMounts: []string{"/srv/data"}}})
	spec := newTask()
	spec.RestartPolicy = task.RestartAlways
	spec.Binds = []string{"/srv/data/x:/x"}
	submit(t, w, eventFor(spec))
	got := waitState(t, w, spec.ID, task.Failed)
	if !strings.Contains(got.Error, "Task.Binds[0]:") || got.RestartCount != 0 {
		t.Errorf("got Error %q RestartCount %d, want the refusal and no restart", got.Error, got.RestartCount)
	}
}

// A restart event accepted with an allowance and replayed by a worker without it is not applied:
// the task's running container is left to run, and a record says why.
func TestRevokedAllowanceLeavesTheRunningContainer(t *testing.T) {
	rt := workertest.New()
	store := &MemoryStore{}
	granted := task.Policy{AllowPrivileged: true}
	first, stopFirst := runUntilStopped(t, rt, Config{Store: store, Policy: granted})
	spec := newTask()
	run := runTask(t, first, spec)
	stopFirst()
	again := spec
	again.Privileged = true
	// Accepted, never applied: the restart order waits in the store.
	submit(t, New(rt, Config{Store: store, Policy: granted, Logger: testLogger(t)}), eventFor(again))

	w, _ := runUntilStopped(t, rt, Config{Store: store})
	got := waitTask(t, w, spec, "the restart event refused", func(t task.Task) bool {
		return hasRecord(t, task.RecordNotRestarting, "--allow-privileged")
	})
	waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the replayed order to be done")
	got, _ = w.Get(spec.ID)
	if got.State != task.Running || got.ContainerID != run.ContainerID || got.Privileged || !slices.Contains(rt.Running(), run.ContainerID) {
		t.Errorf("after the refused restart: %v in %s (Privileged %v), want Running in %s as before", got.State, got.ContainerID, got.Privileged, run.ContainerID)
	}
	if n := len(rt.Starts()); n != 1 {
		t.Errorf("starts: got %d, want 1", n)
	}
}

// A start accepted with an allowance, whose container the Engine started before the worker died
// and before the worker recorded it, is replayed by a worker without the allowance: the running
// container is the task's, taken up and reported, never disowned (and so never reaped) nor
// doubled.
func TestRevokedAllowanceReplayTakesUpTheStartedContainer(t *testing.T) {
	for _, a := range allowances {
		t.Run(a.name, func(t *testing.T) {
			rt := workertest.New()
			store := &MemoryStore{}
			var granted task.Policy
			a.allow(&granted)
			spec := newTask()
			a.ask(&spec)
			// Accepted: the start order waits in the store; the Engine had started its
			// container when the worker died.
			ev := eventFor(spec)
			accepted := submit(t, New(rt, Config{Store: store, Policy: granted, Logger: testLogger(t)}), ev)
			made := rt.Add(task.Container{TaskID: spec.ID, EventID: ev.ID.String(), Running: true, StartedAt: time.Now(), Spec: &accepted})

			w, _ := runUntilStopped(t, rt, Config{Store: store, OrphanGrace: time.Millisecond, ReconcileInterval: 5 * time.Millisecond})
			got := waitTask(t, w, spec, "its running container taken up and reported", func(t task.Task) bool {
				return t.State == task.Running && hasRecord(t, task.RecordNotRestarting, a.flag)
			})
			if got.ContainerID != made.ID {
				t.Errorf("ContainerID: got %s, want the started container %s", got.ContainerID, made.ID)
			}
			waitFor(t, waitTimeout, func() bool { return len(store.Orders()) == 0 }, "the replayed order to be done")
			// Past the orphan grace and some reconciles, the container still runs, alone.
			time.Sleep(50 * time.Millisecond)
			if cs := rt.Containers(); len(cs) != 1 || !slices.Contains(rt.Running(), made.ID) {
				t.Errorf("containers: got %+v, want just %s, running", cs, made.ID)
			}
			if n := len(rt.Starts()); n != 0 {
				t.Errorf("starts: got %d, want none", n)
			}
		})
	}
}
