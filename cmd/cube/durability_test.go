package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/google/uuid"
)

// cubeBinary builds bin/cube once per test process, for tests that kill the worker with
// SIGKILL and start it again, in cubeBinDir, which TestMain removes.
var cubeBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cube-bin-")
	if err != nil {
		return "", err
	}
	cubeBinDir = dir
	bin := filepath.Join(dir, "cube")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// cubeBinDir is the directory cubeBinary built the binary in; "" until it has.
var cubeBinDir string

// proc is a `cube worker` running as a process of its own.
type proc struct {
	*daemon
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc starts `cube worker` with args and the worker name of d, and waits until it
// listens. dockerHost, when not empty, is the Docker Engine it is pointed at. The process is
// killed, and every container of the worker name removed, when the test ends.
func startProc(t *testing.T, name, dockerHost string, args ...string) *proc {
	t.Helper()
	t.Cleanup(func() { testenv.RemoveLabelled(t, docker.LabelWorker+"="+name) }) // after the kill
	bin, err := cubeBinary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"worker", "--port", "0", "--name", name, "--log-level", "debug"}, withLockDir(t, withState(t, args))...)
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	if dockerHost != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+dockerHost)
	}
	logs := newLogSink()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{daemon: &daemon{name: name, logs: logs}, cmd: cmd, done: make(chan struct{})}
	go func() {
		io.Copy(logs, stderr)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill(t) })
	select {
	case addr := <-logs.addr:
		p.url = "http://" + addr
	case <-p.done:
		t.Fatalf("cube worker exited at start:\n%s", logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("cube worker did not listen within 60s:\n%s", logs)
	}
	return p
}

// waitReady waits until /readyz answers 200: the worker recovered its state.
func (d *daemon) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	testenv.WaitReady(t, client, d.url, d.token, within)
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// tasks returns every task the worker lists.
func (d *daemon) tasks(t *testing.T) []task.Task {
	t.Helper()
	var list []task.Task
	if code := d.do(t, http.MethodGet, "/tasks", nil, &list); code != http.StatusOK {
		t.Fatalf("GET /tasks: got %d", code)
	}
	return list
}

func containersOf(t *testing.T, name string) []container.Summary {
	return testenv.Containers(t, docker.LabelWorker+"="+name)
}

// The worker is killed with SIGKILL and started again, ten times: each time the same container
// runs, the task is Running with RestartCount unchanged, and there is no second container.
func TestKill9Loop(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "in memory", true: "data dir"}[durable], func(t *testing.T) {
			testenv.BuildEchoImage(t)
			name := "cube-kill-" + uuid.NewString()[:8]
			args := []string{"--in-memory"}
			if durable {
				args = []string{"--data-dir", t.TempDir()}
			}
			p := startProc(t, name, "", args...)
			tk := echoTask("--listen", ":7777")
			tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
			tk.RestartPolicy = task.RestartAlways
			tk.RestartCount = 2
			first := p.running(t, tk, time.Minute)
			for i := range 10 {
				p.kill(t)
				p = startProc(t, name, "", args...)
				p.waitReady(t, 30*time.Second)
				got := p.waitTask(t, tk.ID, 30*time.Second, "running in the same container", func(t task.Task) bool {
					return t.State == task.Running && t.ContainerID == first.ContainerID
				})
				if got.RestartCount != 2 {
					t.Fatalf("round %d: RestartCount %d, want 2 (unchanged)", i+1, got.RestartCount)
				}
				if len(got.HostPorts["7777/tcp"]) == 0 {
					t.Fatalf("round %d: HostPorts %v, want the published port", i+1, got.HostPorts)
				}
				if cs := containersOf(t, name); len(cs) != 1 || cs[0].ID != first.ContainerID || cs[0].State != "running" {
					t.Fatalf("round %d: containers %v, want just %s running", i+1, cs, first.ContainerID)
				}
				if n := len(p.tasks(t)); n != 1 {
					t.Fatalf("round %d: %d tasks, want 1", i+1, n)
				}
			}
			// Still a working worker: it stops the task it took up.
			if code := p.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
				t.Fatalf("DELETE: got %d", code)
			}
			p.waitState(t, tk.ID, task.Completed, 30*time.Second)
			if cs := containersOf(t, name); len(cs) != 0 {
				t.Fatalf("containers after DELETE: %d, want 0", len(cs))
			}
		})
	}
}

// Events accepted (201) but not applied when the worker dies are applied exactly once after it
// starts again. The first worker talks to a Docker that hangs, so it can apply nothing.
func TestCrashBetweenAcceptAndApply(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-crash-" + uuid.NewString()[:8]
	dir := t.TempDir()
	proxy := faultproxy.Start(t, faultproxy.Options{Mode: faultproxy.Hang})
	p := startProc(t, name, proxy.DockerHost(), "--data-dir", dir)
	var tasks []task.Task
	for range 5 {
		tk := echoTask("--listen", ":7777")
		tasks = append(tasks, p.submit(t, tk))
	}
	// A restart event for one of them, accepted too.
	again := tasks[0]
	again.RestartCount = 7
	again.State = task.Scheduled
	p.submit(t, again)
	p.kill(t)
	proxy.Close() // what the hung Docker was asked never reaches the real one

	p = startProc(t, name, "", "--data-dir", dir)
	p.waitReady(t, 30*time.Second)
	for _, tk := range tasks {
		p.waitState(t, tk.ID, task.Running, time.Minute)
	}
	// Every order is applied once: the restart after the start (RestartCount 7), and then one
	// container per task. (Until the restart is applied, the first task's container may be
	// there, or gone with its successor not yet made.)
	if got := p.waitTask(t, tasks[0].ID, 30*time.Second, "restarted by the event", func(t task.Task) bool {
		return t.State == task.Running && t.RestartCount == 7
	}); len(records(got, task.RecordStarted)) != 2 {
		t.Errorf("records of the restarted task: %v, want two starts", recordTypes(got))
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(containersOf(t, name)) != len(tasks) {
		time.Sleep(50 * time.Millisecond)
	}
	if cs := containersOf(t, name); len(cs) != len(tasks) {
		t.Fatalf("containers: got %d, want %d (one per task)", len(cs), len(tasks))
	}
	// Restarting the worker once more applies nothing again.
	before := containersOf(t, name)
	p.kill(t)
	p = startProc(t, name, "", "--data-dir", dir)
	for _, tk := range tasks {
		p.waitState(t, tk.ID, task.Running, 30*time.Second)
	}
	after := containersOf(t, name)
	if len(after) != len(before) {
		t.Fatalf("containers after another restart: %d, want %d", len(after), len(before))
	}
	ids := map[string]bool{}
	for _, c := range before {
		ids[c.ID] = true
	}
	for _, c := range after {
		if !ids[c.ID] {
			t.Errorf("container %s is new after a restart that had nothing to apply", c.ID[:12])
		}
	}
}

// A DELETE accepted while Docker hangs, then a crash: after the restart the task is Completed
// and its container gone.
func TestDeleteAcceptedThenCrash(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-delete-" + uuid.NewString()[:8]
	dir := t.TempDir()
	proxy := faultproxy.Start(t, faultproxy.Options{})
	p := startProc(t, name, proxy.DockerHost(), "--data-dir", dir)
	tk := echoTask("--listen", ":7777")
	run := p.running(t, tk, time.Minute)
	proxy.Set(faultproxy.Hang)
	if code := p.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	p.kill(t)
	proxy.Close()

	p = startProc(t, name, "", "--data-dir", dir)
	got := p.waitState(t, tk.ID, task.Completed, time.Minute)
	if got.FinishTime.IsZero() {
		t.Error("no FinishTime")
	}
	if !containerGone(t, run.ContainerID) {
		t.Errorf("container %s still exists", run.ContainerID[:12])
	}
}

// The worker removes a container it labelled only when it can prove it is not wanted: here a
// second container of a task that has ended (as a start that a worker which died left under way
// would make). It is removed after the grace period, and only reported with
// --reap-orphans=false. A container of a task the worker has no record of (and cannot rebuild,
// for it has no spec label) is reported and left alone, always.
func TestOrphans(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	for _, reap := range []bool{true, false} {
		t.Run(fmt.Sprintf("reap=%v", reap), func(t *testing.T) {
			name := "cube-orphan-" + uuid.NewString()[:8]
			// A grace of seconds, not less: the planted containers are made, then started, and an
			// Engine under load can take longer between the two than a short grace, which
			// would remove a container before the test could start it.
			p := startProc(t, name, "", "--orphan-grace", "3s", "--reconcile-interval", "100ms", fmt.Sprintf("--reap-orphans=%v", reap))
			ended := p.submit(t, echoTask("--exit", "0"))
			ended = p.waitState(t, ended.ID, task.Completed, time.Minute)
			labelled := func(taskID uuid.UUID, eventID string) string { return plantContainer(t, name, taskID, eventID) }
			stray := labelled(ended.ID, ended.LastEvent)
			unknown := labelled(uuid.New(), uuid.NewString())
			want := "removed orphan container: its task has ended (Completed)"
			if !reap {
				want = "orphan container: its task has ended (Completed); not removed (--reap-orphans=false)"
			}
			deadline := time.Now().Add(45 * time.Second)
			for !strings.Contains(p.logs.String(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the log within 45s:\n%s", want, p.logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if gone := containerGone(t, stray); gone != reap {
				t.Errorf("the ended task's stray container gone: %v, want %v", gone, reap)
			}
			if containerGone(t, ended.ContainerID) {
				t.Errorf("the ended task's own container %s was removed; it is kept for its logs", ended.ContainerID[:12])
			}
			waitReconciles(t, p, 5)
			if containerGone(t, unknown) {
				t.Error("the container of a task the worker has no record of was removed")
			}
			if !strings.Contains(p.logs.String(), "of a task it has no record of; left alone") {
				t.Errorf("the container of a task the worker has no record of was not reported:\n%s", p.logs)
			}
		})
	}
}

// Docker hangs for 20 s, then is gone for 20 s, under steady API traffic: task reads never
// fail, /readyz says 503 during and 200 after, no task is wrongly failed, and all is as before.
func TestDockerHungThenGone(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-outage-" + uuid.NewString()[:8]
	proxy := faultproxy.Start(t, faultproxy.Options{})
	p := startProc(t, name, proxy.DockerHost(), "--data-dir", t.TempDir())
	var tasks []task.Task
	for range 3 {
		tk := echoTask("--listen", ":7777")
		tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
		tasks = append(tasks, p.submit(t, tk))
	}
	before := map[uuid.UUID]string{}
	for _, tk := range tasks {
		before[tk.ID] = p.waitState(t, tk.ID, task.Running, time.Minute).ContainerID
	}

	// Steady traffic: list and get, counting answers by class.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reads, fives atomic.Int64
	var lastBad atomic.Value
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/tasks"
			if i > 0 {
				path = "/tasks/" + tasks[i-1].ID.String()
			}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fives.Add(1)
						lastBad.Store(err.Error())
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				reads.Add(1)
				if resp.StatusCode >= 500 {
					fives.Add(1)
					lastBad.Store(resp.Status)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	stopTraffic := func() { cancel(); wg.Wait() }
	defer stopTraffic()

	outage := func(mode faultproxy.Mode, d time.Duration) {
		proxy.Set(mode)
		end := time.Now().Add(d)
		sawNotReady, sawNote := false, false
		for time.Now().Before(end) {
			if code := p.do(t, http.MethodGet, "/readyz", nil, nil); code == http.StatusServiceUnavailable {
				sawNotReady = true
			}
			for _, tk := range p.tasks(t) {
				if tk.State == task.Failed || tk.State == task.Completed {
					t.Fatalf("%v: task %s is %v (%q) though only Docker is away", mode, tk.ID, tk.State, tk.Error)
				}
				if tk.Unconfirmed != "" {
					sawNote = true
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !sawNotReady {
			t.Errorf("%v: /readyz never said 503", mode)
		}
		if !sawNote {
			t.Errorf("%v: tasks never carried a note that their state is unconfirmed", mode)
		}
	}
	outage(faultproxy.Hang, 20*time.Second)
	outage(faultproxy.Down, 20*time.Second)
	proxy.Set(faultproxy.Pass)

	p.waitReady(t, 30*time.Second)
	for _, tk := range tasks {
		got := p.waitTask(t, tk.ID, 30*time.Second, "confirmed Running again", func(t task.Task) bool {
			return t.State == task.Running && t.Unconfirmed == ""
		})
		if got.ContainerID != before[tk.ID] {
			t.Errorf("task %s: container %s, want the same %s", tk.ID, got.ContainerID[:12], before[tk.ID][:12])
		}
	}
	stopTraffic()
	if n := fives.Load(); n != 0 {
		t.Errorf("task reads: %d of %d failed or answered 5xx (last: %v)", n, reads.Load(), lastBad.Load())
	}
	if cs := containersOf(t, name); len(cs) != len(tasks) {
		t.Errorf("containers: %d, want %d", len(cs), len(tasks))
	}
	// And the worker works: a new task runs, an old one stops.
	next := echoTask("--listen", ":7777")
	p.running(t, next, time.Minute)
	p.do(t, http.MethodDelete, "/tasks/"+tasks[0].ID.String(), nil, nil)
	p.waitState(t, tasks[0].ID, task.Completed, time.Minute)
	t.Logf("%d task reads during the outages, none failed", reads.Load())
}

// A second worker on the same data dir fails at start with a clear message.
func TestTwoWorkersOneDataDir(t *testing.T) {
	t.Parallel()
	name := "cube-lock-" + uuid.NewString()[:8]
	dir := t.TempDir()
	startProc(t, name, "", "--data-dir", dir)
	bin, err := cubeBinary()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command(bin, "worker", "--port", "0", "--name", name+"-2", "--data-dir", dir, "--lock-dir", lockDir(t)).CombinedOutput()
	if err == nil {
		t.Fatalf("the second worker started:\n%s", out)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the second worker took %v to fail, want at once", took)
	}
	msg := lastLine(string(out))
	if !strings.Contains(msg, "in use by another cube worker") || !strings.Contains(msg, dir) {
		t.Errorf("got %q, want a clear message naming %s", msg, dir)
	}
}

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			last = sc.Text()
		}
	}
	return last
}

// A client that watches the events across a kill -9 of the worker never sees a number go back
// and never silently skips: the restarted worker tells it to read the tasks again (a Reset), with
// a number above every one of the earlier run, and its events follow.
func TestEventsAcrossACrash(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "in memory", true: "data dir"}[durable], func(t *testing.T) {
			testenv.BuildEchoImage(t)
			name := "cube-seq-" + uuid.NewString()[:8]
			args := []string{"--port", testenv.FreePort(t)}
			if durable {
				args = append(args, "--data-dir", t.TempDir())
			}
			p := startProc(t, name, "", args...)
			p.waitReady(t, 30*time.Second)
			c, err := apiclient.New(strings.TrimPrefix(p.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			evs := make(chan apiclient.Event, 1024)
			watched := make(chan error, 1)
			go func() {
				watched <- c.Watch(ctx, apiclient.Live, func(ev apiclient.Event) error {
					evs <- ev
					return nil
				})
			}()
			t.Cleanup(func() {
				cancel()
				<-watched
			})
			var seen []apiclient.Event
			next := func(what string, match func(apiclient.Event) bool) apiclient.Event {
				t.Helper()
				deadline := time.After(time.Minute)
				for {
					select {
					case ev := <-evs:
						if n := len(seen); n > 0 && ev.Seq <= seen[n-1].Seq {
							t.Fatalf("event %+v after %+v: the number went back or repeated", ev, seen[n-1])
						}
						seen = append(seen, ev)
						if match(ev) {
							return ev
						}
					case <-deadline:
						t.Fatalf("no %s within a minute; events %v", what, types(seen))
					}
				}
			}
			first := echoTask("--listen", ":7777")
			p.submit(t, first)
			running := next("Started of the first task", func(ev apiclient.Event) bool {
				return ev.TaskID == first.ID && ev.Type == task.RecordStarted
			})

			p.kill(t)
			p = startProc(t, name, "", args...)
			p.waitReady(t, 30*time.Second)
			reset := next("Reset after the crash", func(ev apiclient.Event) bool { return ev.Type == apiclient.EventReset })
			if reset.Seq <= running.Seq || !strings.Contains(reset.Message, "read the tasks again") {
				t.Errorf("Reset %+v: want a Seq above %d and a message saying to read the tasks again", reset, running.Seq)
			}
			for _, ev := range seen {
				if ev.Seq > running.Seq && ev.Type != apiclient.EventReset {
					t.Errorf("event %+v came after the crash before the Reset: want the Reset first", ev)
				}
			}
			// The tasks, read again, hold the first task, and what follows comes live.
			if got := p.tasks(t); len(got) != 1 || got[0].ID != first.ID {
				t.Fatalf("tasks after the crash: got %v, want the first task", got)
			}
			second := echoTask("--print", "x")
			p.submit(t, second)
			received := next("Received of the second task", func(ev apiclient.Event) bool {
				return ev.TaskID == second.ID && ev.Type == task.RecordReceived
			})
			if received.Seq <= reset.Seq {
				t.Errorf("second task's Received at %d, want after the Reset's %d", received.Seq, reset.Seq)
			}
			// Its container made before the test ends, so that the clean-up finds it.
			p.waitState(t, second.ID, task.Completed, time.Minute)
		})
	}
}

// Docker hangs while a task's exec health checks run: the checks cannot be carried out, so they
// count for nothing. The task stays Running and healthy in the same container, and is neither
// killed nor restarted, during the outage or after it.
func TestDockerHungDuringHealthChecks(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-hcheck-" + uuid.NewString()[:8]
	proxy := faultproxy.Start(t, faultproxy.Options{})
	t.Cleanup(func() { proxy.Set(faultproxy.Pass) })
	p := startProc(t, name, proxy.DockerHost())
	tk := echoTask("--listen", ":7777")
	tk.RestartPolicy = task.RestartOnFailure
	tk.Restart = &task.RestartSpec{Delay: ms(100 * time.Millisecond)}
	tk.Health = &task.HealthSpec{Type: task.HealthExec, Command: []string{"/echo", "--check", "http://127.0.0.1:7777/health"},
		Interval: ms(200 * time.Millisecond), Timeout: ms(time.Second), Retries: 2}
	p.submit(t, tk)
	healthy := p.waitTask(t, tk.ID, time.Minute, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })

	const notRun = "health check could not be carried out"
	before := strings.Count(p.logs.String(), notRun)
	proxy.Set(faultproxy.Hang)
	// Hung until the worker has tried, and failed to carry out, well more checks than the
	// retries that would make the task unhealthy; the task is watched all the while.
	deadline := time.Now().Add(time.Minute)
	for strings.Count(p.logs.String(), notRun) < before+8 {
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not report checks it could not carry out within a minute:\n%s", p.logs)
		}
		got := p.get(t, tk.ID)
		if got.State != task.Running || got.HealthStatus == task.HealthUnhealthy || len(records(got, task.RecordKilling)) != 0 {
			t.Fatalf("while Docker hangs: got %v %q, records %v; want Running and not unhealthy", got.State, got.HealthStatus, recordTypes(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	proxy.Set(faultproxy.Pass)
	p.waitReady(t, 30*time.Second)
	// Checked again, and healthy, once Docker answers: the same container, never restarted.
	got := p.waitTask(t, tk.ID, 30*time.Second, "checked again after the outage", func(t task.Task) bool {
		return t.Unconfirmed == "" && t.LastHealthCheck != nil && t.LastHealthCheck.Time.After(time.Now().Add(-time.Second)) &&
			t.LastHealthCheck.Healthy
	})
	if got.State != task.Running || got.ContainerID != healthy.ContainerID || got.RestartCount != 0 || got.HealthStatus != task.HealthHealthy {
		t.Errorf("after the outage: got %v in %s, %d restarts, %q; want Running in %s, none, healthy",
			got.State, got.ContainerID[:12], got.RestartCount, got.HealthStatus, healthy.ContainerID[:12])
	}
	for _, typ := range []string{task.RecordUnhealthy, task.RecordKilling, task.RecordKilled, task.RecordRestarting} {
		if n := len(records(got, typ)); n != 0 {
			t.Errorf("records: got %v, want no %s", recordTypes(got), typ)
		}
	}
}
