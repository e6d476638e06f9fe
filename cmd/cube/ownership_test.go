package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// jobOrServer is a task of a burst and the final state that is the truth for it.
type jobOrServer struct {
	task.Task
	event    uuid.UUID
	want     task.State
	exitCode int
}

// mixedTasks returns n tasks, a third each of jobs that exit 0, jobs that exit 3, and servers.
func mixedTasks(n int) []jobOrServer {
	out := make([]jobOrServer, n)
	for i := range out {
		var j jobOrServer
		switch i % 3 {
		case 0:
			j = jobOrServer{Task: echoTask("--print", "done", "--exit", "0"), want: task.Completed}
		case 1:
			j = jobOrServer{Task: echoTask("--print", "failing", "--exit", "3"), want: task.Failed, exitCode: 3}
		default:
			j = jobOrServer{Task: echoTask("--listen", ":7777"), want: task.Running}
		}
		j.event = uuid.New()
		out[i] = j
	}
	return out
}

// post submits j's event and returns the status, or 0 when the worker did not answer (it was
// killed meanwhile).
func post(url string, j jobOrServer) int {
	body, err := json.Marshal(task.Event{ID: j.event, State: task.Running, Timestamp: time.Now(), Task: j.Task})
	if err != nil {
		return 0
	}
	resp, err := client.Post(url+"/tasks", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// postAll submits every task concurrently and returns those answered 201. The worker may be
// killed meanwhile.
func postAll(url string, tasks []jobOrServer) func() []jobOrServer {
	var mu sync.Mutex
	var accepted []jobOrServer
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, j := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if post(url, j) == http.StatusCreated {
				mu.Lock()
				accepted = append(accepted, j)
				mu.Unlock()
			}
		}()
	}
	return func() []jobOrServer { wg.Wait(); return accepted }
}

// checkTruth waits until every accepted task is in the state that is its truth, then checks
// that each is listed once, that each event made at most one container, and that each accepted
// task has exactly one, the one it reports.
func checkTruth(t *testing.T, p *proc, accepted []jobOrServer) {
	t.Helper()
	for _, j := range accepted {
		got := p.waitTask(t, j.ID, 2*time.Minute, fmt.Sprintf("%v with exit code %d", j.want, j.exitCode), func(tk task.Task) bool {
			return tk.State == j.want && tk.ExitCode == j.exitCode && tk.ContainerID != ""
		})
		if n := len(records(got, task.RecordStarted)); n > 1 { // none when rebuilt from a container that ran
			t.Errorf("task %s (%v): %d Started records, want at most 1: %v", j.ID, j.want, n, recordTypes(got))
		}
	}
	listed := map[uuid.UUID]int{}
	for _, tk := range p.tasks(t) {
		listed[tk.ID]++
	}
	perEvent := map[string]int{}
	perTask := map[string][]string{}
	for _, c := range containersOf(t, p.name) {
		perEvent[c.Labels[task.LabelEventID]]++
		perTask[c.Labels[task.LabelTaskID]] = append(perTask[c.Labels[task.LabelTaskID]], c.ID)
	}
	for ev, n := range perEvent {
		if n > 1 {
			t.Errorf("event %s made %d containers, want at most 1", ev, n)
		}
	}
	for _, j := range accepted {
		if listed[j.ID] != 1 {
			t.Errorf("task %s answered 201 is listed %d times, want once", j.ID, listed[j.ID])
		}
		got := p.get(t, j.ID)
		if cs := perTask[j.ID.String()]; len(cs) != 1 || cs[0] != got.ContainerID {
			t.Errorf("task %s (%v): containers %v, want just its own %s", j.ID, j.want, cs, got.ContainerID)
		}
	}
}

// kill -9 at random moments while bursts of starts are under way, five rounds of 20, the worker
// started again with the same flags each time (its state in a data dir, as by default): every
// task answered 201 runs once, and ends as it truly did.
func TestKill9DuringBurstsOfStarts(t *testing.T) {
	t.Parallel() // with the other kill -9 and ownership tests: they spend much of their time waiting
	testenv.BuildEchoImage(t)
	name := "cube-burst-" + uuid.NewString()[:8]
	args := []string{"--data-dir", t.TempDir()}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 11))
	t.Logf("seed %d", seed)
	p := startProc(t, name, "", args...)
	var accepted []jobOrServer
	for round := range 5 {
		wait := postAll(p.url, mixedTasks(20))
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond) // the random moment of the crash
		p.kill(t)
		got := wait()
		t.Logf("round %d: %d of 20 answered 201 before the kill", round+1, len(got))
		accepted = append(accepted, got...)
		p = startProc(t, name, "", args...)
	}
	p.waitReady(t, time.Minute)
	checkTruth(t, p, accepted)
}

// kill -9 while Docker is still starting containers: the fault proxy holds each container start
// on its way to the Engine, and the worker is killed while it waits for them. Either the held
// starts then reach the Engine, as calls a dying client made still do, or they are lost (the
// proxy goes away). The worker started again, straight on the Engine, finds the containers
// started, or created and never started: it carries on with each, makes no second one, and
// records the exits they really make. With --in-memory the tasks are rebuilt from those
// containers; tasks accepted with no container yet are lost in that mode, as the README says.
func TestKill9WhileDockerStarts(t *testing.T) {
	t.Parallel() // with the other kill -9 and ownership tests: they spend much of their time waiting
	testenv.BuildEchoImage(t)
	for _, mode := range []string{"data dir", "in memory"} {
		for _, held := range []string{"forwarded", "lost"} {
			t.Run(mode+", starts "+held, func(t *testing.T) {
				name := "cube-held-" + uuid.NewString()[:8]
				args := []string{"--in-memory"}
				if mode == "data dir" {
					args = []string{"--data-dir", t.TempDir()}
				}
				proxy := faultproxy.Start(t, faultproxy.Options{})
				proxy.Delay(regexp.MustCompile(`^POST /[^ ]*containers/[0-9a-f]+/start`), time.Second)
				p := startProc(t, name, proxy.DockerHost(), args...)
				tasks := mixedTasks(6)
				accepted := postAll(p.url, tasks)()
				if len(accepted) != len(tasks) {
					t.Fatalf("%d of %d answered 201", len(accepted), len(tasks))
				}
				waitHeld(t, proxy, func(now, _ int64) bool { return now == 4 }, "4 container starts held (--concurrency 4)")
				p.kill(t)
				created := map[string]bool{}
				for _, c := range containersOf(t, name) {
					created[c.Labels[task.LabelTaskID]] = true
					if c.State != "created" {
						t.Errorf("container %s is %s at the kill, want created", c.ID[:12], c.State)
					}
				}
				if len(created) != 4 {
					t.Fatalf("%d containers at the kill, want 4 (one per start under way)", len(created))
				}
				if held == "forwarded" {
					waitHeld(t, proxy, func(now, _ int64) bool { return now == 0 }, "the held starts forwarded")
				} else {
					proxy.Close()
				}
				p = startProc(t, name, "", args...)
				p.waitReady(t, time.Minute)
				if mode == "in memory" {
					var kept []jobOrServer
					for _, j := range accepted {
						if created[j.ID.String()] {
							kept = append(kept, j)
						}
					}
					accepted = kept
				}
				checkTruth(t, p, accepted)
			})
		}
	}
}

// waitHeld polls the proxy's count of held requests until ok says so.
func waitHeld(t *testing.T, proxy *faultproxy.Proxy, ok func(now, total int64) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for now, total := proxy.Held(); !ok(now, total); now, total = proxy.Held() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: the proxy holds %d requests now, %d in all", what, now, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A worker started on a fresh data dir takes up the containers it made before (running, and
// ended), and removes none of them.
func TestFreshDataDirTakesUpContainers(t *testing.T) {
	t.Parallel() // with the other kill -9 and ownership tests: they spend much of their time waiting
	testenv.BuildEchoImage(t)
	name := "cube-fresh-" + uuid.NewString()[:8]
	fast := []string{"--orphan-grace", "100ms", "--reconcile-interval", "100ms"}
	p := startProc(t, name, "", append([]string{"--data-dir", t.TempDir()}, fast...)...)
	tasks := mixedTasks(6)
	accepted := postAll(p.url, tasks)()
	if len(accepted) != len(tasks) {
		t.Fatalf("%d of %d answered 201", len(accepted), len(tasks))
	}
	checkTruth(t, p, accepted)
	before := containersOf(t, name)
	p.kill(t)

	p = startProc(t, name, "", append([]string{"--data-dir", t.TempDir()}, fast...)...)
	p.waitReady(t, time.Minute)
	for _, j := range accepted {
		if j.want == task.Running {
			p.waitState(t, j.ID, task.Running, time.Minute)
		}
	}
	// Several reconciles, each of which would have reaped an orphan after its grace.
	waitReconciles(t, p, 5)
	after := containersOf(t, name)
	if len(after) != len(before) {
		t.Fatalf("containers: %d after the restart on a fresh data dir, want the %d from before", len(after), len(before))
	}
	for _, j := range accepted {
		if got := p.get(t, j.ID); j.want == task.Running && got.State != task.Running {
			t.Errorf("server %s: %v, want Running (taken up)", j.ID, got.State)
		}
	}
	if strings.Contains(p.logs.String(), "removed orphan container") {
		t.Errorf("the worker removed containers:\n%s", p.logs)
	}
}

// waitReconciles waits until the worker has listed Docker's containers n more times (its debug
// log says so), so that a reaper that would remove something has had its chance.
func waitReconciles(t *testing.T, p *proc, n int) {
	t.Helper()
	const line = "reconciled with the container runtime"
	want := strings.Count(p.logs.String(), line) + n
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(p.logs.String(), line) < want {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d reconciles within 30s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two workers with different names on one Engine leave each other's containers alone.
func TestWorkersWithDifferentNamesLeaveEachOtherAlone(t *testing.T) {
	t.Parallel() // with the other kill -9 and ownership tests: they spend much of their time waiting
	testenv.BuildEchoImage(t)
	a, b := "cube-a-"+uuid.NewString()[:8], "cube-b-"+uuid.NewString()[:8]
	t.Cleanup(func() {
		testenv.RemoveLabelled(t, docker.LabelWorker+"="+a)
		testenv.RemoveLabelled(t, docker.LabelWorker+"="+b)
	})
	fast := []string{"--orphan-grace", "100ms", "--reconcile-interval", "100ms"}
	pa := startProc(t, a, "", fast...)
	pb := startProc(t, b, "", fast...)
	ta, tb := echoTask("--listen", ":7777"), echoTask("--listen", ":7777")
	pa.submit(t, ta)
	pb.submit(t, tb)
	runA := pa.waitState(t, ta.ID, task.Running, time.Minute)
	runB := pb.waitState(t, tb.ID, task.Running, time.Minute)
	waitReconciles(t, pa, 5)
	waitReconciles(t, pb, 5)
	for _, w := range []struct {
		p    *proc
		mine task.Task
		c    string
	}{{pa, ta, runA.ContainerID}, {pb, tb, runB.ContainerID}} {
		if list := w.p.tasks(t); len(list) != 1 || list[0].ID != w.mine.ID {
			t.Errorf("worker %s lists %d tasks, want just its own", w.p.name, len(list))
		}
		if cs := containersOf(t, w.p.name); len(cs) != 1 || cs[0].ID != w.c || cs[0].State != "running" {
			t.Errorf("worker %s: containers %v, want just %s running", w.p.name, cs, w.c[:12])
		}
		if l := w.p.logs.String(); strings.Contains(l, "unknown task") || strings.Contains(l, "orphan") {
			t.Errorf("worker %s noticed the other's containers:\n%s", w.p.name, l)
		}
	}
}
