package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/google/uuid"
)

// plantOrphan starts a container labelled as worker's, of its task taskID but of an earlier
// start (an event ID the task no longer has): one the worker can prove unwanted, superseded by
// the task's current start, and removes after --orphan-grace.
func plantOrphan(t *testing.T, worker string, taskID uuid.UUID) string {
	t.Helper()
	return plantContainer(t, worker, taskID, uuid.NewString())
}

// plantContainer starts a container of the echo image made outside the worker, labelled as
// worker's, of task taskID and its start eventID, and returns its ID.
func plantContainer(t *testing.T, worker string, taskID uuid.UUID, eventID string) string {
	t.Helper()
	cli := testenv.Docker(t)
	ctx := testenv.Ctx(t, time.Minute)
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image:  testenv.EchoImage,
		Labels: map[string]string{task.LabelTaskID: taskID.String(), task.LabelEventID: eventID, docker.LabelWorker: worker},
	}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return created.ID
}

func (p *proc) waitLog(t *testing.T, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log of %s within %v:\n%s", want, p.name, within, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two workers with different names on one Engine, each in the default (in-memory) mode with a
// short --orphan-grace and --reconcile-interval, leave each other's containers alone: each
// reconciles and reaps an orphan of its own, and both tasks run on in the containers they started in.
func TestTwoNamesOnOneEngineLeaveEachOtherAlone(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	names := []string{"cube-pair-a-" + uuid.NewString()[:8], "cube-pair-b-" + uuid.NewString()[:8]}
	var procs []*proc
	var tasks []task.Task
	for _, name := range names {
		p := startProc(t, name, "", "--orphan-grace", "1s", "--reconcile-interval", "1s")
		p.waitReady(t, 30*time.Second)
		tk := echoTask("--listen", ":7777")
		p.submit(t, tk)
		tasks = append(tasks, p.waitState(t, tk.ID, task.Running, time.Minute))
		procs = append(procs, p)
	}
	orphans := []string{plantOrphan(t, names[0], tasks[0].ID), plantOrphan(t, names[1], tasks[1].ID)}
	for i, p := range procs {
		// A reconcile with the orphan past its grace removes it: proof that this worker
		// reconciled and reaped while the other worker's containers ran beside its own.
		p.waitLog(t, "removed orphan container", 45*time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for !containerGone(t, orphans[i]) {
			if time.Now().After(deadline) {
				t.Fatalf("%s's orphan %s is still there", p.name, orphans[i][:12])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, p := range procs {
		got := p.get(t, tasks[i].ID)
		if got.State != task.Running || got.ContainerID != tasks[i].ContainerID {
			t.Errorf("%s's task: got %v in %s, want still Running in %s", p.name, got.State, got.ContainerID, tasks[i].ContainerID)
		}
		cs := containersOf(t, p.name)
		if len(cs) != 1 || cs[0].ID != tasks[i].ContainerID || cs[0].State != "running" {
			t.Errorf("%s's containers: got %+v, want just its task's, running", p.name, cs)
		}
		other := procs[1-i]
		if strings.Contains(p.logs.String(), other.name) || strings.Contains(p.logs.String(), tasks[1-i].ContainerID[:12]) {
			t.Errorf("%s's log mentions the other worker or its container:\n%s", p.name, p.logs)
		}
	}
}

// A second worker with the name of a running one on the same Engine refuses to start, at once,
// naming the first; once the first is killed with SIGKILL, a new one with the name starts and
// takes up the first one's task.
func TestOneWorkerPerNamePerEngine(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-name-" + uuid.NewString()[:8]
	first := startProc(t, name, "", "--data-dir", t.TempDir())
	first.waitReady(t, 30*time.Second)
	tk := echoTask("--listen", ":7777")
	run := first.running(t, tk, time.Minute)

	bin, err := cubeBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"worker", "--port", "0", "--name", name, "--in-memory", "--lock-dir", lockDir(t)},             // in memory
		{"worker", "--port", "0", "--name", name, "--data-dir", t.TempDir(), "--lock-dir", lockDir(t)}, // a data dir of its own
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("a second worker named %s started:\n%s", name, out)
		}
		if code := exitCode(err); code != 1 {
			t.Errorf("exit code: got %d (%v), want 1", code, err)
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("the second worker took %v to fail, want at once", took)
		}
		msg := lastLine(string(out))
		want := regexp.MustCompile(fmt.Sprintf(`^cube: worker name %q is in use on this Docker Engine \(ID \S+\) by pid %d \(host \S+\) since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`,
			name, first.cmd.Process.Pid))
		if !want.MatchString(msg) {
			t.Errorf("got %q, want it to match %s", msg, want)
		}
		if strings.Contains(string(out), "listening") {
			t.Errorf("the refused worker listened:\n%s", out)
		}
	}
	// The refused workers touched nothing.
	if got := first.get(t, tk.ID); got.State != task.Running || got.ContainerID != run.ContainerID {
		t.Errorf("the first worker's task: got %v in %s, want Running in %s", got.State, got.ContainerID, run.ContainerID)
	}
	if cs := containersOf(t, name); len(cs) != 1 || cs[0].ID != run.ContainerID {
		t.Errorf("containers: got %d, want just the task's", len(cs))
	}

	// kill -9 leaves no stale lock: the next worker with the name starts and takes the task up.
	first.kill(t)
	next := startProc(t, name, "")
	next.waitReady(t, 30*time.Second)
	got := next.waitState(t, tk.ID, task.Running, 30*time.Second)
	if got.ContainerID != run.ContainerID {
		t.Errorf("after the restart: task in %s, want the same container %s", got.ContainerID, run.ContainerID)
	}
	next.waitLog(t, "worker name claimed on this Docker Engine", 10*time.Second)
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// A worker that starts while Docker does not answer serves at once, and claims its name when
// Docker answers, before it runs anything: it exits naming the holder when the name is taken,
// and runs what it accepted meanwhile when the name is free.
func TestNameClaimedWhenDockerAnswers(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-late-" + uuid.NewString()[:8]
	first := startProc(t, name, "")
	first.waitReady(t, 30*time.Second)
	tk := echoTask("--listen", ":7777")
	run := first.running(t, tk, time.Minute)

	// The name is taken: the late worker exits 1, naming the first, having run nothing.
	proxy := faultproxy.Start(t, faultproxy.Options{Mode: faultproxy.Down})
	late := startProc(t, name, proxy.DockerHost())
	if code := late.do(t, http.MethodGet, "/readyz", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the name is claimed: got %d, want 503", code)
	}
	if err := proxy.Set(faultproxy.Pass); err != nil {
		t.Fatal(err)
	}
	select {
	case <-late.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the late worker did not exit within 30s of Docker answering:\n%s", late.logs)
	}
	if code := late.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code: got %d, want 1", code)
	}
	want := fmt.Sprintf("cube: worker name %q is in use on this Docker Engine", name)
	if msg := lastLine(late.logs.String()); !strings.HasPrefix(msg, want) || !strings.Contains(msg, fmt.Sprintf("by pid %d", first.cmd.Process.Pid)) {
		t.Errorf("got %q, want %q… by pid %d", msg, want, first.cmd.Process.Pid)
	}
	if strings.Contains(late.logs.String(), "worker started") {
		t.Errorf("the late worker ran before it had its name:\n%s", late.logs)
	}
	if got := first.get(t, tk.ID); got.State != task.Running || got.ContainerID != run.ContainerID {
		t.Errorf("the first worker's task: got %v in %s, want Running in %s", got.State, got.ContainerID, run.ContainerID)
	}

	// The name is free: the late worker accepts a task while Docker is away, then claims the
	// name, takes up the first worker's task and runs the new one.
	first.kill(t)
	proxy2 := faultproxy.Start(t, faultproxy.Options{Mode: faultproxy.Down})
	next := startProc(t, name, proxy2.DockerHost())
	queued := echoTask("--listen", ":7777")
	if got := next.submit(t, queued); got.State != task.Scheduled {
		t.Errorf("accepted while Docker is away: got %v, want Scheduled", got.State)
	}
	if err := proxy2.Set(faultproxy.Pass); err != nil {
		t.Fatal(err)
	}
	next.waitReady(t, 30*time.Second)
	next.waitState(t, queued.ID, task.Running, time.Minute)
	if got := next.waitState(t, tk.ID, task.Running, 30*time.Second); got.ContainerID != run.ContainerID {
		t.Errorf("the first worker's task: in %s, want taken up in %s", got.ContainerID, run.ContainerID)
	}
	next.waitLog(t, "worker name claimed on this Docker Engine", 10*time.Second)
}
