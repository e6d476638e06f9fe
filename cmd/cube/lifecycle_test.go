package main

import (
	"bufio"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// waitTask polls the task until cond holds, and fails the test if it does not within the time.
func (d *daemon) waitTask(t *testing.T, id uuid.UUID, within time.Duration, what string, cond func(task.Task) bool) task.Task {
	t.Helper()
	deadline := time.Now().Add(within)
	var last task.Task
	for time.Now().Before(deadline) {
		last = d.get(t, id)
		if cond(last) {
			return last
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("task %s: not %s within %v; last: state %v, RestartCount %d, Error %q, Health %q, Events %v",
		id, what, within, last.State, last.RestartCount, last.Error, last.HealthStatus, recordTypes(last))
	return last
}

func recordTypes(t task.Task) []string {
	var out []string
	for _, r := range t.Events {
		out = append(out, r.Type)
	}
	return out
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

func ms(d time.Duration) task.Duration { return task.Duration(d) }

func TestOOMKilled(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	// --oom: the OOM killer kills a child, and the container ends a second later, so that the
	// Engine always sees the kill (a container whose PID 1 dies at once sometimes loses it on
	// Engine 20.10 with cgroup v1: no oom event, OOMKilled false).
	tk := echoTask("--oom", "64m")
	tk.Memory = 16 << 20
	d.submit(t, tk)
	got := d.waitState(t, tk.ID, task.Failed, time.Minute)
	if got.Error != "OOMKilled" || got.ExitCode != 137 {
		t.Errorf("got Error %q ExitCode %d, want \"OOMKilled\" and 137", got.Error, got.ExitCode)
	}
	if len(records(got, task.RecordOOMKilled)) != 1 {
		t.Errorf("records: got %v, want one OOMKilled", recordTypes(got))
	}
}

func TestKilledBySignal(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	run := d.running(t, tk, 30*time.Second)
	if err := testenv.Docker(t).ContainerKill(testenv.Ctx(t, 10*time.Second), run.ContainerID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	got := d.waitState(t, tk.ID, task.Failed, 10*time.Second)
	if got.ExitCode != 137 || !strings.Contains(got.Error, "killed by signal 9 (SIGKILL)") {
		t.Errorf("got ExitCode %d Error %q, want 137 and killed by signal 9", got.ExitCode, got.Error)
	}
}

// A crash loop restarts with a back-off that doubles up to its cap, then ends Failed when the
// attempts run out.
func TestCrashLoopBackoffAndMaxAttempts(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--print", "crash", "--exit", "1")
	tk.RestartPolicy = task.RestartOnFailure
	tk.Restart = &task.RestartSpec{MaxAttempts: 4, Delay: ms(200 * time.Millisecond), MaxDelay: ms(500 * time.Millisecond)}
	d.submit(t, tk)

	backoff := d.waitTask(t, tk.ID, 30*time.Second, "waiting to restart", func(t task.Task) bool {
		return t.State == task.Scheduled && strings.Contains(t.Error, "back-off: restarting in")
	})
	if !strings.HasPrefix(backoff.Error, "exited with code 1; back-off: restarting in") {
		t.Errorf("Error while waiting: got %q, want why and when", backoff.Error)
	}
	got := d.waitState(t, tk.ID, task.Failed, time.Minute)
	if got.RestartCount != 4 {
		t.Errorf("RestartCount: got %d, want 4", got.RestartCount)
	}
	if !strings.Contains(got.Error, "not restarting: restart attempts exhausted (4)") || got.ExitCode != 1 {
		t.Errorf("got Error %q ExitCode %d, want exhausted attempts and exit code 1", got.Error, got.ExitCode)
	}
	var delays []time.Duration
	for _, r := range records(got, task.RecordRestarting) {
		dl, err := time.ParseDuration(strings.TrimPrefix(r.Message, "in "))
		if err != nil {
			t.Fatalf("Restarting record %q: %v", r.Message, err)
		}
		delays = append(delays, dl)
	}
	if len(delays) != 4 {
		t.Fatalf("Restarting records: got %d (%v), want 4", len(delays), delays)
	}
	// 200ms, 400ms, then the 500ms cap, each within the ±10% jitter and never over the cap.
	for i, want := range []time.Duration{200, 400, 500, 500} {
		want *= time.Millisecond
		lo, hi := want*9/10-time.Millisecond, min(want*11/10+time.Millisecond, 500*time.Millisecond)
		if delays[i] < lo || delays[i] > hi {
			t.Errorf("back-off #%d: got %v, want %v to %v", i+1, delays[i], lo, hi)
		}
	}
	if n := len(records(got, task.RecordStarted)); n != 5 {
		t.Errorf("Started records: got %d, want 5 (the first run and four restarts)", n)
	}
	// Each restart made a new container and removed the old one.
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 1 {
		t.Errorf("containers: got %d, want just the last run's", n)
	}
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	quick := &task.RestartSpec{Delay: ms(100 * time.Millisecond), MaxAttempts: 1}

	onFailureOK := echoTask("--exit", "0")
	onFailureOK.RestartPolicy, onFailureOK.Restart = task.RestartOnFailure, quick
	always := echoTask("--exit", "0")
	always.RestartPolicy, always.Restart = task.RestartAlways, quick
	for _, tk := range []task.Task{onFailureOK, always} {
		d.submit(t, tk)
	}
	got := d.waitState(t, onFailureOK.ID, task.Completed, 30*time.Second)
	if got.RestartCount != 0 || len(records(got, task.RecordNotRestarting)) != 1 {
		t.Errorf("on-failure after exit 0: got RestartCount %d, records %v; want no restart", got.RestartCount, recordTypes(got))
	}
	got = d.waitTask(t, always.ID, 30*time.Second, "restarted once and done", func(t task.Task) bool {
		return t.RestartCount == 1 && t.State == task.Completed
	})
	if len(records(got, task.RecordStarted)) != 2 {
		t.Errorf("always: got records %v, want two starts", recordTypes(got))
	}
}

// A task deleted during its back-off ends Completed (a manager restarts Failed tasks, not
// Completed ones) and never comes back.
func TestDeleteDuringBackoff(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--exit", "1")
	tk.RestartPolicy = task.RestartOnFailure
	tk.Restart = &task.RestartSpec{Delay: ms(2 * time.Second)}
	d.submit(t, tk)
	d.waitTask(t, tk.ID, 30*time.Second, "waiting to restart", func(t task.Task) bool {
		return t.State == task.Scheduled && t.ExitCode == 1 && len(records(t, task.RecordRestarting)) == 1
	})
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	got := d.waitState(t, tk.ID, task.Completed, 10*time.Second)
	if got.Error != "" || got.ContainerID != "" || got.FinishTime.IsZero() {
		t.Errorf("got Error %q ContainerID %q FinishTime %v, want no error, no container, a finish time", got.Error, got.ContainerID, got.FinishTime)
	}
	if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request while it waited to restart" {
		t.Errorf("Stopped records: got %+v in %v, want one saying it waited to restart", rs, recordTypes(got))
	}
	// Watch past the back-off: the task stays stopped and no container comes back.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if cur := d.get(t, tk.ID); cur.State != task.Completed || len(records(cur, task.RecordStarted)) != 1 {
			t.Fatalf("after the back-off: got state %v and records %v, want still Completed, started once", cur.State, recordTypes(cur))
		}
		if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 0 {
			t.Fatalf("containers after the delete: got %d, want 0", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHealthChecks(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	fast := func(h task.HealthSpec) *task.HealthSpec {
		h.Interval, h.Timeout, h.Retries = ms(150*time.Millisecond), ms(time.Second), 2
		return &h
	}
	tests := []struct {
		name   string
		task   func() task.Task
		policy string
	}{
		{"http", func() task.Task {
			tk := echoTask("--listen", ":7777", "--unhealthy-after", "1s")
			tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
			tk.Health = fast(task.HealthSpec{Type: task.HealthHTTP, Path: "/health"})
			return tk
		}, task.RestartOnFailure},
		{"tcp", func() task.Task {
			// Nothing listens on the checked port: never healthy, so unhealthy after the retries.
			tk := echoTask("--listen", ":7777")
			tk.Health = fast(task.HealthSpec{Type: task.HealthTCP, Port: 9000})
			return tk
		}, task.RestartOnFailure},
		{"exec", func() task.Task {
			tk := echoTask("--listen", ":7777", "--unhealthy-after", "1s")
			tk.Health = fast(task.HealthSpec{Type: task.HealthExec, Command: []string{"/echo", "--check", "http://127.0.0.1:7777/health"}})
			return tk
		}, task.RestartOnFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := tt.task()
			tk.RestartPolicy = tt.policy
			tk.Restart = &task.RestartSpec{Delay: ms(100 * time.Millisecond), MaxAttempts: 1}
			d.submit(t, tk)
			if tk.Health != nil && tk.Health.Type != task.HealthTCP {
				d.waitTask(t, tk.ID, 30*time.Second, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
			}
			got := d.waitTask(t, tk.ID, time.Minute, "unhealthy and restarted", func(t task.Task) bool {
				return t.RestartCount == 1 && len(records(t, task.RecordUnhealthy)) >= 1 && t.State == task.Running
			})
			if len(records(got, task.RecordKilling)) == 0 {
				t.Errorf("got records %v, want a Killing record", recordTypes(got))
			}
			// The second run turns unhealthy too, and the one attempt is spent.
			got = d.waitState(t, tk.ID, task.Failed, time.Minute)
			if !strings.HasPrefix(got.Error, "unhealthy") || !strings.Contains(got.Error, "attempts exhausted") {
				t.Errorf("Error: got %q, want unhealthy and attempts exhausted", got.Error)
			}
			if lc := got.LastHealthCheck; lc == nil || lc.Healthy || lc.FailingStreak < 2 || lc.Output == "" || lc.Time.IsZero() {
				t.Errorf("LastHealthCheck: got %+v, want the failing result that ended it", lc)
			}
		})
	}
}

// The book's HealthCheck string is an HTTP GET of that path on the task's first port.
func TestBookHealthCheckPath(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	tk.HealthCheck = "/health"
	d.submit(t, tk)
	got := d.waitTask(t, tk.ID, 30*time.Second, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	if lc := got.LastHealthCheck; lc == nil || !lc.Healthy || lc.Output != "GET /health: 200 OK" {
		t.Errorf("LastHealthCheck: got %+v, want a healthy GET /health", lc)
	}
	tcp := echoTask("--listen", ":7777")
	tcp.Health = &task.HealthSpec{Type: task.HealthTCP, Port: 7777, Interval: ms(100 * time.Millisecond)}
	d.submit(t, tcp)
	d.waitTask(t, tcp.ID, 30*time.Second, "healthy over TCP", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
}

// Without a restart policy an unhealthy task keeps running, reported unhealthy, as with Docker.
func TestUnhealthyWithoutPolicyKeepsRunning(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	tk.Health = &task.HealthSpec{Type: task.HealthTCP, Port: 9999, Interval: ms(100 * time.Millisecond), Retries: 2}
	d.submit(t, tk)
	got := d.waitTask(t, tk.ID, 30*time.Second, "unhealthy", func(t task.Task) bool { return t.HealthStatus == task.HealthUnhealthy })
	if got.State != task.Running || got.LastHealthCheck == nil || got.LastHealthCheck.Healthy || got.LastHealthCheck.FailingStreak < 2 {
		t.Errorf("got state %v LastHealthCheck %+v, want Running with a failing streak", got.State, got.LastHealthCheck)
	}
}

// An image's own HEALTHCHECK, which Docker runs, restarts the task the same way.
func TestImageHealthcheck(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	tag := testenv.TestImage("cube-echo-healthcheck")
	testenv.BuildDockerfile(t, tag, "FROM "+testenv.EchoImage+"\n"+
		`HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/echo", "--check", "http://127.0.0.1:7777/health"]`+"\n", nil)
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777", "--unhealthy-after", "2s")
	tk.Image = tag
	tk.RestartPolicy = task.RestartAlways
	tk.Restart = &task.RestartSpec{Delay: ms(100 * time.Millisecond)}
	d.submit(t, tk)
	d.waitTask(t, tk.ID, 30*time.Second, "healthy by Docker's check", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })
	got := d.waitTask(t, tk.ID, time.Minute, "restarted after Docker found it unhealthy", func(t task.Task) bool {
		return t.RestartCount >= 1 && len(records(t, task.RecordUnhealthy)) >= 1
	})
	if len(records(got, task.RecordKilling)) == 0 {
		t.Errorf("records: got %v, want Killing", recordTypes(got))
	}
}

func TestHostPortConflictFailsOnlyThatTask(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	port := testenv.FreePort(t)
	first := echoTask("--listen", ":7777")
	first.PortBindings = map[string]string{"7777/tcp": port}
	d.running(t, first, 30*time.Second)
	second := echoTask("--listen", ":7777")
	second.PortBindings = map[string]string{"7777/tcp": port}
	d.submit(t, second)
	got := d.waitState(t, second.ID, task.Failed, 30*time.Second)
	if !strings.Contains(got.Error, "host port "+port+" is already in use") {
		t.Errorf("Error: got %q, want it to name host port %s", got.Error, port)
	}
	if cur := d.get(t, first.ID); cur.State != task.Running {
		t.Errorf("the first task: got %v, want still Running", cur.State)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 1 {
		t.Errorf("containers: got %d, want just the first task's", n)
	}
}

func memTotal(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

func TestCapacityRefusal(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--reserve-cpu", "0.5")
	big := echoTask("--listen", ":7777")
	big.Memory = memTotal(t) * 6 / 10
	d.running(t, big, 30*time.Second)

	again := echoTask("--listen", ":7777")
	again.Memory = big.Memory
	var e api.ErrorResponse
	code := d.do(t, http.MethodPost, "/tasks", task.Event{ID: uuid.New(), Task: again}, &e)
	if code != http.StatusConflict || !strings.Contains(e.Message, "Task.Memory") || !strings.Contains(e.Message, "does not fit") {
		t.Fatalf("second big task: got %d %q, want 409 saying Task.Memory does not fit", code, e.Message)
	}
	cpu := echoTask("--listen", ":7777")
	cpu.Cpu = float64(runtime.NumCPU()) // one core more than the reserve leaves
	code = d.do(t, http.MethodPost, "/tasks", task.Event{ID: uuid.New(), Task: cpu}, &e)
	if code != http.StatusConflict || !strings.Contains(e.Message, "Task.Cpu") {
		t.Fatalf("task over the CPU capacity: got %d %q, want 409 naming Task.Cpu", code, e.Message)
	}
	// Once the big task ends, its claim is free again.
	if code := d.do(t, http.MethodDelete, "/tasks/"+big.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d", code)
	}
	d.waitState(t, big.ID, task.Completed, 30*time.Second)
	d.running(t, again, 30*time.Second)
}

func TestRecordsOfARun(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	d.running(t, tk, 30*time.Second)
	d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil)
	got := d.waitState(t, tk.ID, task.Completed, 30*time.Second)
	want := []string{task.RecordReceived, task.RecordCreated, task.RecordStarted, task.RecordKilling, task.RecordKilled, task.RecordStopped}
	if strings.Join(recordTypes(got), ",") != strings.Join(want, ",") {
		t.Errorf("records: got %v, want %v", recordTypes(got), want)
	}
	for i, r := range got.Events {
		if r.Time.IsZero() || (i > 0 && r.Time.Before(got.Events[i-1].Time)) {
			t.Errorf("record %d (%s) at %v: times must be set and in order", i, r.Type, r.Time)
		}
	}
}

func TestPullThroughTheDaemonHidesCredentials(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	reg := testenv.StartRegistry(t, true)
	ref := reg.Push(t, testenv.EchoImage, "private/echo:v2")
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	tk.Image = ref
	tk.RegistryAuth = &task.RegistryAuth{Username: reg.Username, Password: reg.Password}
	d.running(t, tk, time.Minute)
	resp, err := client.Get(d.url + "/tasks/" + tk.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&body)
	resp.Body.Close()
	if strings.Contains(body.String(), reg.Password) || strings.Contains(body.String(), "RegistryAuth") {
		t.Errorf("the task answer shows the credentials: %s", body.String())
	}
	if strings.Contains(d.logs.String(), reg.Password) {
		t.Errorf("the worker's log shows the password")
	}

	bad := echoTask()
	bad.Image = reg.Host + "/private/echo:v2"
	bad.PullPolicy = task.PullAlways
	bad.RegistryAuth = &task.RegistryAuth{Username: reg.Username, Password: "not-the-password"}
	d.submit(t, bad)
	got := d.waitState(t, bad.ID, task.Failed, time.Minute)
	if !strings.HasPrefix(got.Error, "image pull failed: ") || strings.Contains(got.Error, "not-the-password") {
		t.Errorf("Error: got %q, want an image pull failure without the password", got.Error)
	}
}

// An ended task reports no live health and no live ports, every time: a container that exits at
// once, with a published port, and one that was healthy before it ended.
func TestEndedTaskReportsNothingLive(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	var quick []task.Task
	for range 5 {
		tk := echoTask("--print", "bye", "--exit", "3")
		tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
		tk.Health = &task.HealthSpec{Type: task.HealthHTTP, Path: "/health", Interval: ms(100 * time.Millisecond)}
		quick = append(quick, d.submit(t, tk))
	}
	healthy := echoTask("--listen", ":7777", "--sleep", "3s")
	healthy.ExposedPorts = task.PortSet{"7777/tcp": {}}
	healthy.Health = &task.HealthSpec{Type: task.HealthHTTP, Path: "/health", Interval: ms(100 * time.Millisecond)}
	d.submit(t, healthy)
	d.waitTask(t, healthy.ID, 30*time.Second, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })

	check := func(tk task.Task, want task.State) {
		t.Helper()
		got := d.waitState(t, tk.ID, want, time.Minute)
		if got.HealthStatus != "" || got.HostPorts != nil {
			t.Errorf("task %s, %v: got HealthStatus %q, HostPorts %v; want neither", tk.ID, got.State, got.HealthStatus, got.HostPorts)
		}
		for _, listed := range d.tasks(t) {
			if listed.ID == tk.ID && (listed.HealthStatus != "" || listed.HostPorts != nil) {
				t.Errorf("task %s in the list: got HealthStatus %q, HostPorts %v; want neither", tk.ID, listed.HealthStatus, listed.HostPorts)
			}
		}
	}
	for _, tk := range quick {
		check(tk, task.Failed)
	}
	check(healthy, task.Completed)
	// Its history stays: the last check it had (the container may have stopped answering just
	// before it ended), and the Healthy record.
	if got := d.get(t, healthy.ID); got.LastHealthCheck == nil || len(records(got, task.RecordHealthy)) != 1 {
		t.Errorf("the ended task: got LastHealthCheck %+v, records %v; want the last check and the Healthy record kept", got.LastHealthCheck, recordTypes(got))
	}
}

// A container paused with docker pause is reported paused (the task's Paused field, a Paused
// record and event), neither healthy nor killed for the checks it cannot answer, and unpaused
// again; it is never restarted.
func TestPausedContainerIsReported(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	tk.RestartPolicy = task.RestartAlways
	tk.Health = &task.HealthSpec{Type: task.HealthHTTP, Path: "/health", Interval: ms(100 * time.Millisecond), Timeout: ms(300 * time.Millisecond), Retries: 1}
	d.submit(t, tk)
	run := d.waitTask(t, tk.ID, 30*time.Second, "healthy", func(t task.Task) bool { return t.HealthStatus == task.HealthHealthy })

	cli := testenv.Docker(t)
	if err := cli.ContainerPause(testenv.Ctx(t, 30*time.Second), run.ContainerID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerUnpause(testenv.Ctx(t, 30*time.Second), run.ContainerID) })
	paused := d.waitTask(t, tk.ID, 30*time.Second, "paused", func(t task.Task) bool { return t.Paused })
	if paused.State != task.Running || paused.HealthStatus != "" || len(records(paused, task.RecordPaused)) != 1 {
		t.Errorf("paused: got %v %q, records %v; want Running, no health, a Paused record", paused.State, paused.HealthStatus, recordTypes(paused))
	}
	// Checks against a frozen container would time out and, with one retry and restart always,
	// kill it within a few hundred milliseconds: for ten times that, nothing of the kind.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		got := d.get(t, tk.ID)
		if !got.Paused || got.HealthStatus != "" || got.ContainerID != run.ContainerID || len(records(got, task.RecordKilling)) != 0 {
			t.Fatalf("while paused: got Paused %v, %q, container %s, records %v; want paused, no health, the same container",
				got.Paused, got.HealthStatus, got.ContainerID[:12], recordTypes(got))
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := cli.ContainerUnpause(testenv.Ctx(t, 30*time.Second), run.ContainerID); err != nil {
		t.Fatal(err)
	}
	got := d.waitTask(t, tk.ID, 30*time.Second, "unpaused and healthy", func(t task.Task) bool {
		return !t.Paused && t.HealthStatus == task.HealthHealthy
	})
	if got.ContainerID != run.ContainerID || got.RestartCount != 0 || len(records(got, task.RecordUnpaused)) != 1 ||
		len(records(got, task.RecordUnhealthy)) != 0 {
		t.Errorf("unpaused: got container %s, %d restarts, records %v; want the same container, never unhealthy",
			got.ContainerID[:12], got.RestartCount, recordTypes(got))
	}
	// The event stream told it too.
	c, err := apiclient.New(strings.TrimPrefix(d.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Events(testenv.Ctx(t, 30*time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := collect(t, s, func(ev apiclient.Event) bool { return ev.Type == task.RecordUnpaused })
	var sawPaused bool
	for _, ev := range evs {
		if ev.Type == task.RecordPaused && ev.TaskID == tk.ID && ev.State == task.Running && ev.HealthStatus == "" {
			sawPaused = true
		}
	}
	if !sawPaused {
		t.Errorf("events: got %v, want a Paused event of the task, Running with no health", types(evs))
	}
}
