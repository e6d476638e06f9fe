package main

import (
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// waitContainerGone waits until the Engine no longer has container id.
func waitContainerGone(t *testing.T, id string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !containerGone(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("container %s still exists after %v", id[:12], within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGone waits until the worker answers 404 for the task and no longer lists it.
func (d *daemon) waitGone(t *testing.T, id uuid.UUID, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code := d.do(t, http.MethodGet, "/tasks/"+id.String(), nil, nil)
		listed := slices.ContainsFunc(d.tasks(t), func(x task.Task) bool { return x.ID == id })
		if code == http.StatusNotFound && !listed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s after %v: GET answers %d, listed %v; want 404 and not listed", id, within, code, listed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runEnded starts a task that exits 0 at once and waits until it is Completed, its container
// kept.
func (d *daemon) runEnded(t *testing.T) task.Task {
	t.Helper()
	tk := echoTask("--print", "bye", "--exit", "0")
	d.submit(t, tk)
	done := d.waitState(t, tk.ID, task.Completed, time.Minute)
	if done.ContainerID == "" {
		t.Fatalf("task %s ended without its container kept", tk.ID)
	}
	return done
}

// DELETE ?remove=true of a running task: 204, then 404 at once; the container is stopped and
// removed. cube rm refuses a task that has not ended, and removes it with -f; it removes an
// ended one.
func TestRemoveRunningTask(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	run := d.running(t, tk, time.Minute)
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String()+"?remove=true", nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE ?remove=true: got %d, want 204", code)
	}
	if code := d.do(t, http.MethodGet, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNotFound {
		t.Errorf("GET right after the removal: got %d, want 404", code)
	}
	waitContainerGone(t, run.ContainerID, time.Minute)
	d.waitGone(t, tk.ID, 10*time.Second)
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String()+"?remove=true", nil, nil); code != http.StatusNotFound {
		t.Errorf("DELETE ?remove=true again: got %d, want 404", code)
	}

	// cube rm, as docker rm: a running task is refused without -f.
	web := echoTask("--listen", ":7777")
	webRun := d.running(t, web, time.Minute)
	out, err := d.cube(t, "rm", web.ID.String()[:8])
	if err == nil || !strings.Contains(err.Error(), "is Running") || !strings.Contains(err.Error(), "-f") {
		t.Errorf("cube rm of a running task: got %q, %v; want it refused, naming -f", out, err)
	}
	if got := d.get(t, web.ID); got.State != task.Running || got.ContainerID != webRun.ContainerID {
		t.Errorf("after the refused rm: got %v in %q, want it Running as it was", got.State, got.ContainerID)
	}
	if out := d.mustCube(t, "rm", "-f", web.ID.String()[:8]); strings.TrimSpace(out) != web.ID.String() {
		t.Errorf("cube rm -f: got %q, want the task's ID", out)
	}
	waitContainerGone(t, webRun.ContainerID, time.Minute)
	d.waitGone(t, web.ID, 10*time.Second)

	ended := d.runEnded(t)
	if out := d.mustCube(t, "rm", ended.ID.String()); strings.TrimSpace(out) != ended.ID.String() {
		t.Errorf("cube rm of an ended task: got %q, want its ID", out)
	}
	waitContainerGone(t, ended.ContainerID, time.Minute)
	d.waitGone(t, ended.ID, 10*time.Second)
	if cs := containersOf(t, d.name); len(cs) != 0 {
		t.Errorf("containers: got %d, want none", len(cs))
	}
}

// A removal answered 204 while Docker hangs, then kill -9 of the worker: the worker started
// again on the same data dir removes the container and forgets the task.
func TestRemoveThenKill9(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-rm-kill-" + uuid.NewString()[:8]
	dir := t.TempDir()
	proxy := faultproxy.Start(t, faultproxy.Options{})
	p := startProc(t, name, proxy.DockerHost(), "--data-dir", dir)
	p.waitReady(t, 30*time.Second)
	tk := echoTask("--listen", ":7777")
	run := p.running(t, tk, time.Minute)
	if err := proxy.Set(faultproxy.Hang); err != nil {
		t.Fatal(err)
	}
	if code := p.do(t, http.MethodDelete, "/tasks/"+tk.ID.String()+"?remove=true", nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE ?remove=true: got %d, want 204", code)
	}
	p.kill(t)
	proxy.Close()
	if containerGone(t, run.ContainerID) {
		t.Fatal("the container is gone before the restart: the kill did not land before the removal")
	}

	p = startProc(t, name, "", "--data-dir", dir)
	p.waitReady(t, 30*time.Second)
	waitContainerGone(t, run.ContainerID, time.Minute)
	p.waitGone(t, tk.ID, 10*time.Second)
	if cs := containersOf(t, name); len(cs) != 0 {
		t.Errorf("containers: got %d, want none", len(cs))
	}
}

// Retention across restarts of a worker with a data dir: ended tasks beyond --keep-ended go,
// the longest-ended first, with their containers; then, with a short --keep-ended-for, the rest
// go too; a running task stays.
func TestRetentionAcrossRestart(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-keep-" + uuid.NewString()[:8]
	dir := t.TempDir()
	p := startProc(t, name, "", "--data-dir", dir, "--keep-ended", "10", "--gc-interval", "100ms")
	p.waitReady(t, 30*time.Second)
	var ended []task.Task
	for range 4 {
		ended = append(ended, p.runEnded(t))
	}
	web := echoTask("--listen", ":7777")
	p.running(t, web, time.Minute)
	if n := len(p.tasks(t)); n != 5 {
		t.Fatalf("tasks with --keep-ended 10: got %d, want 5", n)
	}
	p.kill(t)

	p = startProc(t, name, "", "--data-dir", dir, "--keep-ended", "2", "--gc-interval", "100ms")
	p.waitReady(t, 30*time.Second)
	for _, e := range ended[:2] {
		waitContainerGone(t, e.ContainerID, time.Minute)
		p.waitGone(t, e.ID, 10*time.Second)
	}
	for _, e := range ended[2:] {
		if got := p.get(t, e.ID); got.ContainerID != e.ContainerID || containerGone(t, e.ContainerID) {
			t.Errorf("task %s, among the 2 that ended last: its container %q was not kept", e.ID, got.ContainerID)
		}
	}
	p.kill(t)

	p = startProc(t, name, "", "--data-dir", dir, "--keep-ended-for", "1s", "--gc-interval", "100ms")
	p.waitReady(t, 30*time.Second)
	for _, e := range ended[2:] {
		waitContainerGone(t, e.ContainerID, time.Minute)
		p.waitGone(t, e.ID, 10*time.Second)
	}
	if got := p.get(t, web.ID); got.State != task.Running {
		t.Errorf("the running task: got %v, want it kept Running", got.State)
	}
	if cs := containersOf(t, name); len(cs) != 1 {
		t.Errorf("containers: got %d, want the running task's only", len(cs))
	}
}

// At the task cap, tasks that ended by themselves (their containers kept) make room: no POST is
// refused, and their containers are removed.
func TestTaskCapWithEndedTasks(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-tasks", "3")
	var all []task.Task
	for range 8 {
		all = append(all, d.runEnded(t))
		if n := len(d.tasks(t)); n > 3 {
			t.Fatalf("tasks: got %d, want at most 3", n)
		}
	}
	for _, e := range all[:len(all)-3] {
		waitContainerGone(t, e.ContainerID, time.Minute)
	}
	if cs := containersOf(t, d.name); len(cs) > 3 {
		t.Errorf("containers: got %d, want at most 3", len(cs))
	}
}

// A chatty task's log is rotated: its container is created with a json-file log of
// --log-max-size and --log-max-files, the file stays under the limit, and GET /logs still
// answers with the latest lines.
func TestTaskLogsAreBounded(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--log-max-size", "64k", "--log-max-files", "2")
	line := strings.Repeat("x", 200)
	tk := echoTask("--print", line, "--lines", "5000", "--listen", ":7777")
	run := d.running(t, tk, time.Minute)
	c, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), run.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	lc := c.HostConfig.LogConfig
	if lc.Type != "json-file" || lc.Config["max-size"] != strconv.Itoa(64<<10) || lc.Config["max-file"] != "2" {
		t.Fatalf("LogConfig: got %+v, want json-file with max-size %d and max-file 2", lc, 64<<10)
	}
	// 5000 lines of 200 bytes are about 1.3 MB of json-file: rotated, only 2 files of 64 KiB
	// stay. Wait until the last line is written, then look at the files.
	d.waitTask(t, tk.ID, time.Minute, "the output printed", func(task.Task) bool {
		out := testenv.GetWithin(t, d.url+"/tasks/"+tk.ID.String()+"/logs?tail=1", 10*time.Second)
		return strings.TrimSpace(out) == line+" 5000"
	})
	var total int64
	for _, path := range []string{c.LogPath, c.LogPath + ".1", c.LogPath + ".2"} {
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if st.Size() > 64<<10+4<<10 {
			t.Errorf("%s: %d bytes, want at most about 64 KiB", path, st.Size())
		}
		total += st.Size()
	}
	if _, err := os.Stat(c.LogPath + ".1"); err != nil {
		t.Errorf("no rotated log file %s.1: %v", c.LogPath, err)
	}
	if _, err := os.Stat(c.LogPath + ".2"); err == nil {
		t.Errorf("a third log file %s.2 exists with --log-max-files 2", c.LogPath)
	}
	if total > 2*(64<<10+4<<10) {
		t.Errorf("log files: %d bytes in all, want at most 2 × 64 KiB", total)
	}
}

// An image the daemon pulled from the registry is removed once its task is removed and
// --image-keep has passed; the local image it was pushed from stays.
func TestPulledImageCollected(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	reg := testenv.StartRegistry(t, false)
	ref := reg.Push(t, testenv.EchoImage, "cube/gc-daemon:v1")
	d := startDaemon(t, "--image-keep", "1s", "--gc-interval", "100ms")
	tk := echoTask("--print", "bye", "--exit", "0")
	tk.Image = ref
	d.submit(t, tk)
	ended := d.waitState(t, tk.ID, task.Completed, time.Minute)
	present := func(img string) bool {
		_, err := testenv.Docker(t).ImageInspect(testenv.Ctx(t, 10*time.Second), img)
		return err == nil
	}
	// Kept while the ended task's container exists, however long that is.
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		if !present(ref) {
			t.Fatalf("%s removed while a container of it exists", ref)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String()+"?remove=true", nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE ?remove=true: got %d, want 204", code)
	}
	waitContainerGone(t, ended.ContainerID, time.Minute)
	deadline := time.Now().Add(time.Minute)
	for present(ref) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still present a minute after its last use, with --image-keep 1s", ref)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !present(testenv.EchoImage) {
		t.Errorf("%s was removed; the worker did not pull it", testenv.EchoImage)
	}
}
