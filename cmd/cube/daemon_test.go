package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// daemon is a cube worker running in-process on port 0, as `cube worker` runs it.
type daemon struct {
	name   string
	url    string
	token  string // the bearer token do sends, if any
	cancel context.CancelFunc
	done   chan error
	logs   *logSink
	once   sync.Once
}

// startDaemon runs `cube worker` with args until the test ends, and waits until it is ready.
// Its containers carry a worker name unique to the test, and are all removed when the test ends.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	testenv.BuildEchoImage(t)
	d := &daemon{name: "cube-test-" + uuid.NewString()[:8], done: make(chan error, 1), logs: newLogSink()}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	args = append([]string{"worker", "--port", "0", "--name", d.name, "--log-level", "debug"}, withLockDir(t, withState(t, args))...)
	go func() { d.done <- run(ctx, args, func(string) string { return "" }, io.Discard, d.logs) }()
	select {
	case addr := <-d.logs.addr:
		d.url = "http://" + addr
	case err := <-d.done:
		t.Fatalf("cube worker exited at start: %v\n%s", err, d.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("cube worker did not listen within 30s\n%s", d.logs)
	}
	t.Cleanup(func() {
		d.stop(t)
		testenv.RemoveLabelled(t, docker.LabelWorker+"="+d.name)
	})
	// A worker serving TLS is waited for by its test, which has the client that can reach it.
	if !slices.Contains(args, "--tls-cert") {
		testenv.WaitReady(t, client, d.url, tokenArg(t, args), 30*time.Second)
	}
	return d
}

// tokenArg returns the full-access token that args give the worker with --token-file, or "".
func tokenArg(t *testing.T, args []string) string {
	t.Helper()
	i := slices.Index(args, "--token-file")
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	b, err := os.ReadFile(args[i+1])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// withState returns args with a data dir of the test's own when they name none (nor --in-memory):
// a test never uses the default state directory.
func withState(t *testing.T, args []string) []string {
	t.Helper()
	for _, a := range args {
		if a == "--in-memory" || a == "--data-dir" || strings.HasPrefix(a, "--data-dir=") {
			return args
		}
	}
	return append(args, "--data-dir", t.TempDir())
}

// lockDirs holds each test's lock directory, by test.
var lockDirs sync.Map // *testing.T → string

// lockDir returns the test's own lock directory (--lock-dir): the same one for every worker the
// test starts, so that two workers with one name in one test meet on it as on the host's, and
// removed with what it holds when the test ends. A worker killed with SIGKILL leaves its lock
// file behind; in the host's /run/cube every suite run would leave dozens.
func lockDir(t *testing.T) string {
	t.Helper()
	if dir, ok := lockDirs.Load(t); ok {
		return dir.(string)
	}
	dir := t.TempDir()
	lockDirs.Store(t, dir)
	t.Cleanup(func() { lockDirs.Delete(t) })
	return dir
}

// withLockDir returns args with the test's lock directory when they name none.
func withLockDir(t *testing.T, args []string) []string {
	t.Helper()
	for _, a := range args {
		if a == "--lock-dir" || strings.HasPrefix(a, "--lock-dir=") {
			return args
		}
	}
	return append(args, "--lock-dir", lockDir(t))
}

// stop shuts the daemon down as SIGTERM would and waits for it. It is safe to call twice.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.once.Do(func() {
		d.cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("cube worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("cube worker did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", d.logs)
		}
	})
}

// logSink collects the daemon's log and finds the address it listens on.
type logSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
	line []byte
}

var listenRE = regexp.MustCompile(`msg=listening .*addr=(\S+)`)

func newLogSink() *logSink { return &logSink{addr: make(chan string, 1)} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.line = append(l.line, p...)
	for {
		i := bytes.IndexByte(l.line, '\n')
		if i < 0 {
			break
		}
		if m := listenRE.FindSubmatch(l.line[:i]); m != nil {
			select {
			case l.addr <- string(m[1]):
			default:
			}
		}
		l.line = l.line[i+1:]
	}
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var client = &http.Client{Timeout: 30 * time.Second}

// do sends a request with an optional JSON body and decodes a JSON answer into out.
func (d *daemon) do(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// submit posts a new event for tk and expects 201.
func (d *daemon) submit(t *testing.T, tk task.Task) task.Task {
	t.Helper()
	ev := task.Event{ID: uuid.New(), State: task.Running, Timestamp: time.Now(), Task: tk}
	var got task.Task
	if code := d.do(t, http.MethodPost, "/tasks", ev, &got); code != http.StatusCreated {
		t.Fatalf("POST /tasks: got %d, want 201", code)
	}
	return got
}

// running submits tk and waits, up to within, until it runs; it returns the running task.
func (d *daemon) running(t *testing.T, tk task.Task, within time.Duration) task.Task {
	t.Helper()
	d.submit(t, tk)
	return d.waitState(t, tk.ID, task.Running, within)
}

func (d *daemon) get(t *testing.T, id uuid.UUID) task.Task {
	t.Helper()
	var got task.Task
	if code := d.do(t, http.MethodGet, "/tasks/"+id.String(), nil, &got); code != http.StatusOK {
		t.Fatalf("GET /tasks/%s: got %d, want 200", id, code)
	}
	return got
}

// waitState polls the task until it is in state s, and fails the test if it is not within d.
func (d *daemon) waitState(t *testing.T, id uuid.UUID, s task.State, within time.Duration) task.Task {
	t.Helper()
	deadline := time.Now().Add(within)
	var last task.Task
	for time.Now().Before(deadline) {
		last = d.get(t, id)
		if last.State == s {
			return last
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("task %s: state %v after %v, want %v (Error %q)", id, last.State, within, s, last.Error)
	return last
}

func echoTask(args ...string) task.Task {
	id := uuid.New()
	return task.Task{ID: id, Name: "e2e-" + id.String()[:8], State: task.Scheduled, Image: testenv.EchoImage, Cmd: args}
}

func containerGone(t *testing.T, id string) bool {
	t.Helper()
	_, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), id)
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "no such container")
}

func TestStartRunsALabelledContainerWithPublishedPorts(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	got := d.submit(t, tk)
	if got.ID != tk.ID || got.State != task.Scheduled {
		t.Fatalf("POST answer: got ID %s state %v, want %s Scheduled", got.ID, got.State, tk.ID)
	}
	run := d.waitState(t, tk.ID, task.Running, 30*time.Second)
	if run.ContainerID == "" || run.StartTime.IsZero() {
		t.Fatalf("running task: got ContainerID %q StartTime %v, want both set", run.ContainerID, run.StartTime)
	}
	bs := run.HostPorts["7777/tcp"]
	if len(bs) == 0 {
		t.Fatalf("HostPorts: got %v, want 7777/tcp", run.HostPorts)
	}
	for k, v := range run.HostPorts {
		if len(v) == 0 {
			t.Errorf("HostPorts[%s] is empty", k)
		}
	}
	info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), run.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Labels[task.LabelTaskID] != tk.ID.String() {
		t.Errorf("label: got %v, want %s=%s", info.Config.Labels, task.LabelTaskID, tk.ID)
	}
	if body := testenv.GetWithin(t, "http://127.0.0.1:"+bs[0].HostPort+"/health", 10*time.Second); body != "ok" {
		t.Errorf("published port: got %q, want ok", body)
	}

	var list []task.Task
	if code := d.do(t, http.MethodGet, "/tasks", nil, &list); code != http.StatusOK || len(list) != 1 || list[0].ID != tk.ID {
		t.Errorf("GET /tasks: got %d %v, want 200 with the one task", code, list)
	}
	var stats map[string]json.RawMessage
	d.do(t, http.MethodGet, "/stats", nil, &stats)
	if string(stats["TaskCount"]) != "1" {
		t.Errorf("stats TaskCount: got %s, want 1", stats["TaskCount"])
	}

	// DELETE stops and removes the container; the task ends Completed.
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	done := d.waitState(t, tk.ID, task.Completed, 30*time.Second)
	if done.FinishTime.IsZero() {
		t.Error("Completed task has no FinishTime")
	}
	if !containerGone(t, run.ContainerID) {
		t.Errorf("container %s still exists after DELETE", run.ContainerID)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	ok := echoTask("--print", "done", "--sleep", "200ms", "--exit", "0")
	bad := echoTask("--print", "oops", "--sleep", "200ms", "--exit", "3")
	d.submit(t, ok)
	d.submit(t, bad)

	got := d.waitState(t, ok.ID, task.Completed, 30*time.Second)
	if got.ExitCode != 0 || got.Error != "" || got.FinishTime.IsZero() {
		t.Errorf("exit 0: got ExitCode %d Error %q FinishTime %v, want 0, empty, set", got.ExitCode, got.Error, got.FinishTime)
	}
	got = d.waitState(t, bad.ID, task.Failed, 30*time.Second)
	if got.ExitCode != 3 || got.Error != "exited with code 3" || got.FinishTime.IsZero() {
		t.Errorf("exit 3: got ExitCode %d Error %q FinishTime %v, want 3, \"exited with code 3\", set", got.ExitCode, got.Error, got.FinishTime)
	}
}

func TestMissingImageFails(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask()
	tk.Image = "cube-test/no-such-image:v1"
	d.submit(t, tk)
	got := d.waitState(t, tk.ID, task.Failed, 60*time.Second)
	if !strings.Contains(got.Error, "image pull failed") || !strings.Contains(got.Error, tk.Image) {
		t.Errorf("Error: got %q, want it to say the pull of %s failed", got.Error, tk.Image)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 0 {
		t.Errorf("got %d containers, want none", n)
	}
}

func TestContainerRemovedBehindTheWorkersBack(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	run := d.running(t, tk, 30*time.Second)
	if err := testenv.Docker(t).ContainerRemove(testenv.Ctx(t, 30*time.Second), run.ContainerID, containerRemoveForce); err != nil {
		t.Fatal(err)
	}
	// The Engine reports the kill (die) and then the removal (destroy); the task is Failed at the
	// first and says the container was removed at the second.
	deadline := time.Now().Add(10 * time.Second)
	got := d.get(t, tk.ID)
	for !(got.State == task.Failed && strings.Contains(got.Error, "container removed outside cube")) {
		if time.Now().After(deadline) {
			t.Fatalf("got state %v Error %q, want Failed saying the container was removed outside cube", got.State, got.Error)
		}
		time.Sleep(10 * time.Millisecond)
		got = d.get(t, tk.ID)
	}
	if code := d.do(t, http.MethodGet, "/healthz", nil, nil); code != http.StatusOK {
		t.Fatalf("healthz after rm -f: got %d, want 200", code)
	}
	next := echoTask("--listen", ":7777")
	d.running(t, next, 30*time.Second)
}

func TestRestartEventStartsANewContainer(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	first := d.running(t, tk, 30*time.Second)

	// The book's manager restarts a task by posting it again, Scheduled, with a new event ID and
	// its RestartCount raised.
	tk.RestartCount = 1
	d.submit(t, tk)
	deadline := time.Now().Add(30 * time.Second)
	var got task.Task
	for time.Now().Before(deadline) {
		got = d.get(t, tk.ID)
		if got.State == task.Running && got.ContainerID != first.ContainerID {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got.State != task.Running || got.ContainerID == first.ContainerID {
		t.Fatalf("after restart: got state %v container %s, want Running in a new container (old %s)", got.State, got.ContainerID, first.ContainerID)
	}
	if got.RestartCount != 1 {
		t.Errorf("RestartCount: got %d, want 1", got.RestartCount)
	}
	if !containerGone(t, first.ContainerID) {
		t.Errorf("old container %s still exists", first.ContainerID)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 1 {
		t.Errorf("got %d containers, want 1", n)
	}
}

func TestFiftyTasksAtOnce(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	const n = 50
	tasks := make([]task.Task, n)
	var wg sync.WaitGroup
	for i := range tasks {
		tasks[i] = echoTask("--listen", ":7777")
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.submit(t, tasks[i])
		}()
	}
	wg.Wait()
	for _, tk := range tasks {
		d.waitState(t, tk.ID, task.Running, 2*time.Minute)
	}
	if got := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); got != n {
		t.Errorf("got %d containers, want %d", got, n)
	}
	for _, tk := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
				t.Errorf("DELETE: got %d, want 204", code)
			}
		}()
	}
	wg.Wait()
	for _, tk := range tasks {
		d.waitState(t, tk.ID, task.Completed, 2*time.Minute)
	}
	if got := testenv.Containers(t, docker.LabelWorker+"="+d.name); len(got) != 0 {
		t.Errorf("got %d containers left, want 0", len(got))
	}
}

func TestBadRequestsReachNeitherDockerNorTheStore(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	for _, body := range []string{
		`{"ID":"not-a-uuid","Task":{"ID":"` + uuid.NewString() + `","Image":"cube-echo:latest"}}`,
		`{"ID":"` + uuid.NewString() + `","Task":{"ID":"` + uuid.NewString() + `"}}`,
		`{"ID":"` + uuid.NewString() + `","Task":{"ID":"` + uuid.NewString() + `","Image":"cube-echo:latest","Bogus":1}}`,
		`{"ID":`,
	} {
		resp, err := client.Post(d.url+"/tasks", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e api.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.HTTPStatusCode != 400 || e.Message == "" {
			t.Errorf("POST %s: got %d %+v, want 400 with a message", body, resp.StatusCode, e)
		}
	}
	var list []task.Task
	d.do(t, http.MethodGet, "/tasks", nil, &list)
	if len(list) != 0 {
		t.Errorf("tasks after bad requests: got %d, want 0", len(list))
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 0 {
		t.Errorf("containers after bad requests: got %d, want 0", n)
	}
}

func TestShutdownLeavesContainersRunning(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--listen", ":7777")
	run := d.running(t, tk, 30*time.Second)
	d.stop(t)
	info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), run.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if !info.State.Running {
		t.Errorf("container after shutdown: got %s, want running", info.State.Status)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(d.url, "http://"), time.Second); err == nil {
		t.Error("the daemon still accepts connections after shutdown")
	}
}

func TestPortInUseIsAnError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	// A name of its own: the worker claims it on the Engine before it listens.
	err = run(context.Background(), []string{"worker", "--port", port, "--name", "busy-" + uuid.NewString()[:8], "--data-dir", t.TempDir(), "--lock-dir", lockDir(t)}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("got %v, want an 'address already in use' error", err)
	}
}

func TestEnvironmentFallbacks(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	name := "from-env-" + uuid.NewString()[:8]     // a name of its own: the worker claims it on the Engine
	lockDir := filepath.Join(t.TempDir(), "locks") // made by the worker when it claims its name
	env := map[string]string{"CUBE_WORKER_HOST": "127.0.0.1", "CUBE_WORKER_PORT": port, "CUBE_WORKER_NAME": name, "CUBE_LOCK_DIR": lockDir,
		"CUBE_DATA_DIR": t.TempDir()}
	// The port from the environment is taken, so the daemon fails naming it: proof it was used.
	err = run(context.Background(), []string{"worker"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port) {
		t.Fatalf("got %v, want a listen error on 127.0.0.1:%s", err, port)
	}
	// The name was claimed in CUBE_LOCK_DIR first (and given up again: the lock file is gone).
	if fi, err := os.Stat(lockDir); err != nil || !fi.IsDir() {
		t.Errorf("CUBE_LOCK_DIR %s: %v, want the directory the worker made for its lock", lockDir, err)
	}
	if locks, _ := filepath.Glob(filepath.Join(lockDir, "*")); len(locks) != 0 {
		t.Errorf("files left in CUBE_LOCK_DIR: %v, want none once the worker has returned", locks)
	}
	env["CUBE_WORKER_PORT"] = "not-a-port"
	err = run(context.Background(), []string{"worker"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "CUBE_WORKER_PORT") {
		t.Fatalf("got %v, want an error naming CUBE_WORKER_PORT", err)
	}
	// A flag beats the environment.
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = run(ctx, []string{"worker", "--port", "0"}, func(k string) string { return env[k] }, io.Discard, &logs)
	if err != nil {
		t.Fatalf("--port 0 with a bad CUBE_WORKER_PORT: %v", err)
	}
	if !strings.Contains(logs.String(), "worker="+name) {
		t.Errorf("log: got %q, want the name from CUBE_WORKER_NAME", firstLine(logs.String()))
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "cube ") {
		t.Errorf("got %q, want it to start with \"cube \"", out.String())
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// --enable-debug serves Go's profiles under /debug/pprof/; without it they are not there.
func TestEnableDebugServesProfiles(t *testing.T) {
	t.Parallel()
	var e api.ErrorResponse
	if got := startDaemon(t).do(t, http.MethodGet, "/debug/pprof/heap", nil, &e); got != http.StatusNotFound || e.HTTPStatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/heap without --enable-debug: got %d %+v, want 404 and a JSON error", got, e)
	}
	d := startDaemon(t, "--enable-debug")
	resp, err := client.Get(d.url + "/debug/pprof/goroutine")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Errorf("GET /debug/pprof/goroutine with --enable-debug: got %d %.40q, want 200 and a gzipped profile", resp.StatusCode, b)
	}
}
