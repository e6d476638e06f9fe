package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// hostTree makes, under a new temporary directory, allowed/work (empty), allowed/data holding
// the file inside, and outside holding the file secret; it returns the directory, resolved.
func hostTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"allowed/work", "allowed/data", "outside"} {
		if err := os.MkdirAll(root+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{"allowed/data/inside": "in", "outside/secret": "out"} {
		if err := os.WriteFile(root+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// wantForbidden posts tk and expects 403 naming field, with each of parts in the message.
func (d *daemon) wantForbidden(t *testing.T, tk task.Task, field string, parts ...string) {
	t.Helper()
	var e api.ErrorResponse
	code := d.do(t, http.MethodPost, "/tasks", task.Event{ID: uuid.New(), State: task.Running, Task: tk}, &e)
	if code != http.StatusForbidden || !strings.HasPrefix(e.Message, field+": ") {
		t.Errorf("POST %v: got %d %q, want 403 naming %s", tk.Binds, code, e.Message, field)
		return
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Errorf("POST %v: got %q, want it to contain %q", tk.Binds, e.Message, p)
		}
	}
}

// The two-task attack: task A, with a writable bind under the allowed prefix, makes a link in
// it to the host's /var/run; task B asks to bind that link, or the Docker socket through it. B
// is refused with 403 naming the bind, and never starts.
func TestBindThroughALinkATaskMade(t *testing.T) {
	t.Parallel()
	img := testenv.BuildEchoImage(t)
	root := hostTree(t)
	d := startDaemon(t, "--allow-bind-mounts", root+"/allowed")

	a := echoTask("--symlink", "/var/run:/work/run", "--sleep", "5m")
	a.Image = img
	a.Binds = []string{root + "/allowed/work:/work"}
	d.running(t, a, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if target, err := os.Readlink(root + "/allowed/work/run"); err == nil && target == "/var/run" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("task A did not make its link within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	varRun, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		t.Fatal(err)
	}
	for _, bind := range []string{"/allowed/work/run:/hostrun:ro", "/allowed/work/run/docker.sock:/var/run/docker.sock"} {
		b := echoTask("--ls", "/hostrun")
		b.Image = img
		b.Binds = []string{root + bind}
		d.wantForbidden(t, b, "Task.Binds[0]", "leads to", `"`+varRun)
	}
	// A's own bind is fine, and through it the link is only a link: inside B's container it
	// leads to B's own /var/run, not the host's.
	b := echoTask("--ls", "/work")
	b.Image = img
	b.Binds = []string{root + "/allowed/work:/work:ro"}
	d.submit(t, b)
	d.waitState(t, b.ID, task.Completed, 30*time.Second)
	if got := d.taskLogs(t, b.ID, "tail=all"); got != "run\n" {
		t.Errorf("B's listing of /work: got %q, want just the link, run", got)
	}
	if n := len(containersOf(t, d.name)); n != 2 {
		t.Errorf("containers: got %d, want A's and the allowed B's", n)
	}
}

// Links placed under the prefix beforehand: one leading out is refused, one leading to another
// place under the prefix is followed; and a prefix that is itself a link allows where it leads.
func TestBindThroughALinkPlacedBeforehand(t *testing.T) {
	t.Parallel()
	img := testenv.BuildEchoImage(t)
	root := hostTree(t)
	for link, target := range map[string]string{
		"allowed/etclink": "/etc", "allowed/outlink": "../outside", "allowed/datalink": "data", "linked": "allowed",
	} {
		if err := os.Symlink(target, root+"/"+link); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, "--allow-bind-mounts", root+"/linked")

	for _, tt := range []struct{ bind, leads string }{
		{"/allowed/etclink:/e:ro", `"/etc"`},
		{"/allowed/etclink/passwd:/p:ro", `"/etc/passwd"`},
		{"/linked/etclink:/e:ro", `"/etc"`},
		{"/allowed/outlink:/o", root + "/outside"},
		{"/outside:/o", root + "/outside"},
	} {
		tk := echoTask("--ls", "/x")
		tk.Image = img
		tk.Binds = []string{root + tt.bind}
		d.wantForbidden(t, tk, "Task.Binds[0]", tt.leads)
	}
	for _, bind := range []string{"/allowed/datalink:/x:ro", "/linked/data:/x:ro", "/linked/datalink:/x"} {
		tk := echoTask("--ls", "/x")
		tk.Image = img
		tk.Binds = []string{root + bind}
		d.submit(t, tk)
		d.waitState(t, tk.ID, task.Completed, 30*time.Second)
		if got := d.taskLogs(t, tk.ID, "tail=all"); got != "inside\n" {
			t.Errorf("listing of %s: got %q, want inside", bind, got)
		}
	}
}

// A link swapped in and out, as fast as the host can, while tasks that bind the path are
// accepted and started: each is refused (403, or Failed at its start), or sees the inside. None
// ever sees the outside.
// It runs alone (not in parallel): it checks that no worker of this process holds a pin.
func TestBindWhileALinkIsSwapped(t *testing.T) {
	img := testenv.BuildEchoImage(t)
	root := hostTree(t)
	if err := os.Symlink("../outside", root+"/allowed/link"); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--allow-bind-mounts", root+"/allowed", "--concurrency", "8")

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// allowed/data and allowed/link trade places, each rename(2) atomic.
		for !stop.Load() {
			os.Rename(root+"/allowed/data", root+"/allowed/tmp")
			os.Rename(root+"/allowed/link", root+"/allowed/data")
			os.Rename(root+"/allowed/tmp", root+"/allowed/link")
		}
	}()
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	var ids []uuid.UUID
	refused, saw := 0, 0
	deadline := time.Now().Add(2 * time.Minute)
	for round := 0; (saw < 3 || refused < 3) && round < 20 && time.Now().Before(deadline); round++ {
		var batch []uuid.UUID
		for range 8 {
			tk := echoTask("--ls", "/data")
			tk.Image = img
			tk.Binds = []string{root + "/allowed/data:/data:ro"}
			var e api.ErrorResponse
			switch code := d.do(t, http.MethodPost, "/tasks", task.Event{ID: uuid.New(), State: task.Running, Task: tk}, &e); code {
			case http.StatusCreated:
				batch = append(batch, tk.ID)
			case http.StatusForbidden:
				refused++
				if !strings.HasPrefix(e.Message, "Task.Binds[0]: ") {
					t.Errorf("403: got %q, want it to name Task.Binds[0]", e.Message)
				}
			default:
				t.Fatalf("POST: got %d %q, want 201 or 403", code, e.Message)
			}
		}
		for _, id := range batch {
			got := d.waitTask(t, id, time.Minute, "ended", func(t task.Task) bool { return t.State.Terminal() || t.State == task.Failed })
			if got.State == task.Failed {
				refused++
				if !strings.Contains(got.Error, "Task.Binds[0]: ") {
					t.Errorf("task %s Failed with %q, want a refusal naming Task.Binds[0]", id, got.Error)
				}
				continue
			}
			logs := d.taskLogs(t, id, "tail=all")
			if logs != "inside\n" {
				t.Errorf("task %s saw %q in /data, want inside alone", id, logs)
			}
			saw++
		}
		ids = append(ids, batch...)
	}
	t.Logf("%d tasks saw the inside, %d were refused", saw, refused)
	if saw == 0 {
		t.Fatal("no task got to run while the link was swapped: nothing was shown")
	}
	if refused == 0 {
		t.Fatal("no task was refused: the link was never seen")
	}
	// Every pin of this process's workers was released.
	entries, _ := os.ReadDir(hostpath.DefaultDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), strconv.Itoa(os.Getpid())+"-") {
			if pins, _ := os.ReadDir(hostpath.DefaultDir + "/" + e.Name()); len(pins) > 0 {
				t.Errorf("pins left in %s: %d", e.Name(), len(pins))
			}
		}
	}
}

// Each allowance, revoked across a restart of the worker (killed with SIGKILL): a task accepted
// with it keeps its running container, reported in its events; when that container ends, the
// task is not started again but ends Failed, naming the flag. A task that was waiting to
// restart when the worker went down is not started either.
func TestAllowanceRevokedAcrossRestart(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	prefix := t.TempDir()
	for _, tt := range []struct {
		name string
		flag []string
		ask  func(*task.Task)
	}{
		{"privileged", []string{"--allow-privileged"}, func(t *task.Task) { t.Privileged = true }},
		{"host network", []string{"--allow-host-network"}, func(t *task.Task) { t.NetworkMode = "host" }},
		{"host pid", []string{"--allow-host-pid"}, func(t *task.Task) { t.PidMode = "host" }},
		{"cap add", []string{"--allow-cap-add"}, func(t *task.Task) { t.CapAdd = []string{"NET_ADMIN"} }},
		{"devices", []string{"--allow-devices"}, func(t *task.Task) { t.Devices = []string{"/dev/null:/dev/xnull:r"} }},
		{"binds", []string{"--allow-bind-mounts", prefix}, func(t *task.Task) { t.Binds = []string{prefix + ":/data:ro"} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "cube-revoke-" + uuid.NewString()[:8]
			t.Cleanup(func() { testenv.RemoveLabelled(t, "cube.worker="+name) })
			dir := t.TempDir()
			p := startProc(t, name, "", append([]string{"--data-dir", dir}, tt.flag...)...)
			tk := echoTask("--sleep", "5m")
			tk.RestartPolicy = task.RestartAlways
			// Where the start fails (privileged, on an Engine that cannot grant it), the task waits
			// 5 s to restart: the worker is killed while it waits, with no create of its own in
			// flight that could land after the new worker is up (one did, 600 ms late, on an
			// Engine busy with a thousand containers, when the wait was 10 ms).
			tk.Restart = &task.RestartSpec{Delay: task.Duration(5 * time.Second), MaxDelay: task.Duration(time.Hour)}
			tt.ask(&tk)
			p.submit(t, tk)
			first := p.waitTask(t, tk.ID, 30*time.Second, "running, or waiting to restart after a failed start",
				func(t task.Task) bool { return t.State == task.Running || len(records(t, task.RecordRestarting)) > 0 })
			killed := time.Now()
			p.kill(t)
			// A create the killed worker had sent may still land: wait until the Engine shows
			// no new one for a while, so that what comes after is the new worker's.
			last := createEvents(t, name, killed)
			for deadline, still := time.Now().Add(20*time.Second), 0; still < 3 && time.Now().Before(deadline); {
				time.Sleep(200 * time.Millisecond)
				if n := createEvents(t, name, killed); n == last {
					still++
				} else {
					last, still = n, 0
				}
			}

			restarted := time.Now()
			p = startProc(t, name, "", "--data-dir", dir)
			if first.State == task.Running {
				got := p.waitTask(t, tk.ID, 30*time.Second, "its running container reported", func(t task.Task) bool {
					return slices.ContainsFunc(t.Events, func(r task.Record) bool {
						return r.Type == task.RecordNotRestarting && strings.Contains(r.Message, tt.flag[0])
					})
				})
				if got.State != task.Running || got.ContainerID != first.ContainerID {
					t.Fatalf("after the restart: %v in %s, want Running in %s, left to run", got.State, got.ContainerID, first.ContainerID)
				}
				info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), first.ContainerID)
				if err != nil || !info.State.Running {
					t.Fatalf("the container after the restart: %v, %v; want it running", info.State, err)
				}
				if err := testenv.Docker(t).ContainerKill(testenv.Ctx(t, 10*time.Second), first.ContainerID, "KILL"); err != nil {
					t.Fatal(err)
				}
			} else {
				// This Engine cannot run it (privileged containers need capabilities a
				// sandboxed Engine lacks): the task was waiting to restart.
				t.Logf("the first start failed (%s); checking the restart after recovery", first.Error)
			}
			got := p.waitState(t, tk.ID, task.Failed, 30*time.Second)
			if !strings.Contains(got.Error, tt.flag[0]) || !strings.Contains(got.Error, "not started") {
				t.Errorf("Error: got %q, want it to say the task was not started and name %s", got.Error, tt.flag[0])
			}
			if n, want := len(records(got, task.RecordStarted)), len(records(first, task.RecordStarted)); n != want {
				t.Errorf("Started records: got %d, want %d (none after the restart)", n, want)
			}
			if n := createEvents(t, name, restarted); n != 0 {
				t.Errorf("containers created after the allowance was revoked: %d, want none", n)
			}
			// The same spec, posted anew, is refused.
			again := tk
			again.ID = uuid.New()
			p.wantForbidden(t, again, fieldOf(tt.flag[0]), tt.flag[0])
		})
	}
}

// fieldOf names the task field a flag allows.
func fieldOf(flag string) string {
	return map[string]string{
		"--allow-privileged": "Task.Privileged", "--allow-host-network": "Task.NetworkMode",
		"--allow-host-pid": "Task.PidMode", "--allow-cap-add": "Task.CapAdd",
		"--allow-devices": "Task.Devices", "--allow-bind-mounts": "Task.Binds[0]",
	}[flag]
}

// createEvents counts the Engine's container create events, since the given time, of
// containers of the worker named worker.
func createEvents(t *testing.T, worker string, since time.Time) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, errs := testenv.Docker(t).Events(ctx, events.ListOptions{
		Since: since.UTC().Format(time.RFC3339Nano),
		Until: time.Now().UTC().Format(time.RFC3339Nano),
		Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "create"),
			filters.Arg("label", "cube.worker="+worker)),
	})
	n := 0
	for {
		select {
		case <-msgs:
			n++
		case err := <-errs:
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("docker events: %v", err)
			}
			return n
		}
	}
}

// A worker killed with SIGKILL while it holds a pin (its Docker hangs on the create) leaves the
// pin mounted; the next worker replays the start, pins afresh, and removes what the dead one
// left. The container sees the source.
func TestKilledWhileHoldingAPin(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	root := hostTree(t)
	name := "cube-pin-" + uuid.NewString()[:8]
	t.Cleanup(func() { testenv.RemoveLabelled(t, "cube.worker="+name) })
	dir := t.TempDir()
	proxy := faultproxy.Start(t, faultproxy.Options{})
	p := startProc(t, name, proxy.DockerHost(), "--data-dir", dir, "--allow-bind-mounts", root+"/allowed")
	p.waitReady(t, 30*time.Second)
	pid := p.cmd.Process.Pid
	t.Cleanup(func() { removePinsOf(t, pid) })
	if err := proxy.Set(faultproxy.Hang); err != nil {
		t.Fatal(err)
	}
	tk := echoTask("--sleep", "5m")
	tk.Binds = []string{root + "/allowed/data:/data:ro"}
	p.submit(t, tk)
	var held []string
	deadline := time.Now().Add(30 * time.Second)
	for len(held) == 0 {
		held = pinsOf(t, pid)
		if time.Now().After(deadline) {
			t.Fatal("the worker held no pin within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.kill(t)
	proxy.Close() // what the hung Docker was asked never reaches the real one
	if !mounted(t, held[0]) {
		t.Fatalf("the killed worker's pin %s: not mounted, want it left behind", held[0])
	}

	p = startProc(t, name, "", "--data-dir", dir, "--allow-bind-mounts", root+"/allowed")
	run := p.waitState(t, tk.ID, task.Running, time.Minute)
	if names := containerSees(t, run.ContainerID, "/data"); !slices.Equal(names, []string{"inside"}) {
		t.Errorf("the container's /data: got %v, want [inside]", names)
	}
	if left := pinsOf(t, pid); len(left) != 0 || mounted(t, held[0]) {
		t.Errorf("the killed worker's pins after the next start: %v (mounted %v), want them removed", left, mounted(t, held[0]))
	}
}

// pinsOf returns the pins the worker process pid holds.
func pinsOf(t *testing.T, pid int) []string {
	t.Helper()
	dirs, _ := filepath.Glob(fmt.Sprintf("%s/%d-*", hostpath.DefaultDir, pid))
	var pins []string
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			pins = append(pins, d+"/"+e.Name())
		}
	}
	return pins
}

// removePinsOf detaches and removes what the worker process pid left in the pin directory.
func removePinsOf(t *testing.T, pid int) {
	for _, p := range pinsOf(t, pid) {
		unix.Unmount(p, unix.MNT_DETACH)
		os.Remove(p)
	}
	dirs, _ := filepath.Glob(fmt.Sprintf("%s/%d-*", hostpath.DefaultDir, pid))
	for _, d := range dirs {
		os.Remove(d)
	}
}

// mounted reports whether something is mounted at path, by /proc/self/mountinfo.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// Each allowance, revoked across a crash between accepting a start and applying it: the worker
// that replays the start does not make the container.
func TestAllowanceRevokedBeforeReplay(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	prefix := t.TempDir()
	for _, tt := range []struct {
		flag []string
		ask  func(*task.Task)
	}{
		{[]string{"--allow-privileged"}, func(t *task.Task) { t.Privileged = true }},
		{[]string{"--allow-host-network"}, func(t *task.Task) { t.NetworkMode = "host" }},
		{[]string{"--allow-host-pid"}, func(t *task.Task) { t.PidMode = "host" }},
		{[]string{"--allow-cap-add"}, func(t *task.Task) { t.CapAdd = []string{"SYS_TIME"} }},
		{[]string{"--allow-devices"}, func(t *task.Task) { t.Devices = []string{"/dev/null"} }},
		{[]string{"--allow-bind-mounts", prefix}, func(t *task.Task) { t.Binds = []string{prefix + ":/data"} }},
	} {
		t.Run(tt.flag[0], func(t *testing.T) {
			name := "cube-replay-" + uuid.NewString()[:8]
			t.Cleanup(func() { testenv.RemoveLabelled(t, "cube.worker="+name) })
			dir := t.TempDir()
			// The first worker's Docker hangs: it accepts the start and can apply nothing.
			proxy := faultproxy.Start(t, faultproxy.Options{Mode: faultproxy.Hang})
			p := startProc(t, name, proxy.DockerHost(), append([]string{"--data-dir", dir}, tt.flag...)...)
			tk := echoTask("--sleep", "5m")
			tt.ask(&tk)
			p.submit(t, tk)
			p.kill(t)
			proxy.Close()

			restarted := time.Now()
			p = startProc(t, name, "", "--data-dir", dir)
			got := p.waitState(t, tk.ID, task.Failed, 30*time.Second)
			if !strings.Contains(got.Error, tt.flag[0]) || !strings.Contains(got.Error, "not started") {
				t.Errorf("Error: got %q, want it to say the task was not started and name %s", got.Error, tt.flag[0])
			}
			if n := createEvents(t, name, restarted); n != 0 {
				t.Errorf("containers created by the replay: %d, want none", n)
			}
		})
	}
}
