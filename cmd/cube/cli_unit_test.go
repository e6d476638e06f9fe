package main

// Fast tests of the client commands against the real API over a worker on the fake runtime, and,
// for what the fake cannot show (pull progress, and the logs, task stats and events routes still
// to land), against a server that follows the API's contract.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
	"github.com/google/uuid"
)

// cliFake is a worker on the fake runtime, served over HTTP, with extra routes a test may add in
// front of the API.
type cliFake struct {
	rt    *workertest.Runtime
	w     *worker.Worker
	addr  string
	mu    sync.Mutex
	extra map[string]http.HandlerFunc // by path suffix, such as "/logs" or "/events"
	seen  func(r *http.Request)       // told of every request before it is served, when set
}

func newCLIFake(t *testing.T) *cliFake {
	t.Helper()
	f := &cliFake{extra: map[string]http.HandlerFunc{}}
	wh := testworker.Start(t, testworker.Options{
		Config: worker.Config{Logger: slog.New(slog.DiscardHandler), PingInterval: 20 * time.Millisecond, RuntimeName: "the Docker Engine"},
		Serve: func(wh *testworker.Harness) http.Handler {
			h := api.New(wh.Worker, api.Options{Logger: wh.Logger, Version: api.Version{Version: "v1.2.3", Commit: "abc1234", Name: t.Name()}})
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				f.mu.Lock()
				var extra http.HandlerFunc
				for suffix, fn := range f.extra {
					if strings.HasSuffix(r.URL.Path, suffix) {
						extra = fn
					}
				}
				seen := f.seen
				f.mu.Unlock()
				if seen != nil {
					seen(r)
				}
				if extra != nil {
					extra(w, r)
					return
				}
				h.ServeHTTP(w, r)
			})
		},
	})
	f.rt, f.w, f.addr = wh.Fake, wh.Worker, wh.Addr
	return f
}

func (f *cliFake) handle(suffix string, fn http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.extra[suffix] = fn
}

// cube runs the command line with args against the fake (through CUBE_WORKER) and returns its
// standard output and error.
func (f *cliFake) cube(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return cliCube(t, context.Background(), map[string]string{"CUBE_WORKER": f.addr}, args...)
}

// cliCube runs the command line with args and the environment env, and returns its standard
// output and error. Anything it writes to standard error is logged.
func cliCube(t *testing.T, ctx context.Context, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("cube %s: stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	return stdout.String(), err
}

// start submits a task named name to the fake and waits until it runs.
func (f *cliFake) start(t *testing.T, name string) task.Task {
	t.Helper()
	tk := task.Task{ID: uuid.New(), Name: name, Image: "cube-echo:latest", ExposedPorts: task.PortSet{"7777/tcp": {}}}
	if _, err := f.w.Submit(task.Event{ID: uuid.New(), State: task.Running, Task: tk}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := f.w.Get(tk.ID)
		if err == nil && got.State == task.Running {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not run within 5s", name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestCLIRunFlagsBuildTheTask(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	out, err := f.cube(t, "run", "--name", "web", "-e", "A=1", "-e", "B=two words", "-p", "8080:7777", "-p", ":9000/udp",
		"--cpu", "0.5", "--memory", "256m", "--restart", "on-failure", "--health-path", "/health",
		"cube-echo:latest", "--", "--listen", ":7777", "--print", "hi there")
	if err != nil {
		t.Fatalf("cube run: %v", err)
	}
	id, err := uuid.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("cube run printed %q, want the task's ID", out)
	}
	got, err := f.w.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	want := task.Task{
		Name: "web", Image: "cube-echo:latest", Env: []string{"A=1", "B=two words"},
		ExposedPorts: task.PortSet{"7777/tcp": {}, "9000/udp": {}}, PortBindings: map[string]string{"7777/tcp": "8080"},
		Cpu: 0.5, Memory: 256 << 20, RestartPolicy: "on-failure", HealthCheck: "/health",
		Cmd: []string{"--listen", ":7777", "--print", "hi there"},
	}
	if got.Name != want.Name || got.Image != want.Image || !slices.Equal(got.Env, want.Env) ||
		fmt.Sprint(got.ExposedPorts) != fmt.Sprint(want.ExposedPorts) || fmt.Sprint(got.PortBindings) != fmt.Sprint(want.PortBindings) ||
		got.Cpu != want.Cpu || got.Memory != want.Memory || got.RestartPolicy != want.RestartPolicy ||
		got.HealthCheck != want.HealthCheck || !slices.Equal(got.Cmd, want.Cmd) {
		t.Errorf("task from flags:\n got %+v\nwant %+v", got, want)
	}

	// A task file, with flags over it.
	file := filepath.Join(t.TempDir(), "task.json")
	os.WriteFile(file, []byte(`{"Name": "filed", "Image": "cube-echo:latest", "Memory": 67108864, "Cmd": ["--listen", ":7777"]}`), 0o600)
	out, err = f.cube(t, "run", "-f", file, "--name", "renamed", "--cmd", "--listen :8888", "-o", "json")
	if err != nil {
		t.Fatalf("cube run -f: %v", err)
	}
	var fromFile task.Task
	if err := json.Unmarshal([]byte(out), &fromFile); err != nil {
		t.Fatalf("cube run -o json printed %q: %v", out, err)
	}
	if fromFile.Name != "renamed" || fromFile.Memory != 64<<20 || !slices.Equal(fromFile.Cmd, []string{"--listen", ":8888"}) {
		t.Errorf("task from file and flags: got name %q memory %d cmd %q, want renamed, 64 MiB, [--listen :8888]", fromFile.Name, fromFile.Memory, fromFile.Cmd)
	}
}

func TestCLIRunErrors(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	file := filepath.Join(t.TempDir(), "task.json")
	os.WriteFile(file, []byte(`{"Image": "cube-echo:latest", "Replicas": 3}`), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "no image: give one as an argument, with --image, or in the -f file"},
		{[]string{"run", "a", "b"}, `unexpected arguments ["b"]: give the task's command after --`},
		{[]string{"run", "--image", "a", "b"}, "give the image once"},
		{[]string{"run", "-e", "NOVALUE", "x"}, `-e "NOVALUE": want KEY=VALUE`},
		{[]string{"run", "-p", "http", "x"}, `-p "http": container port "http" is not a port number`},
		{[]string{"run", "-p", "0.0.0.0:80:80", "x"}, "a host address cannot be given"},
		{[]string{"run", "-p", "80:80/icmp", "x"}, `protocol "icmp" is not tcp, udp or sctp`},
		{[]string{"run", "-p", "99999:80", "x"}, `host port "99999" is not a port number`},
		{[]string{"run", "--memory", "lots", "x"}, `--memory "lots": want a size such as 256m or 1g`},
		{[]string{"run", "--cmd", "a", "x", "--", "b"}, "give the command once"},
		{[]string{"run", "-f", file}, `not a task: unknown field "Replicas"`},
		{[]string{"run", "-o", "yaml", "x"}, "-o yaml: want json or text"},
		// The worker's own checks, with its messages.
		{[]string{"run", "--memory", "1k", "x"}, "Task.Memory: must be 0 (no limit) or at least 6291456 bytes (6 MiB), got 1024"},
		{[]string{"run", "Not An Image"}, `Task.Image: "Not An Image" is not a valid image reference`},
		{[]string{"run", "--restart", "sometimes", "x"}, `Task.RestartPolicy: "sometimes" is not one of`},
		{[]string{"run", "--health-path", "/health", "x"}, "Task.HealthCheck: is checked on the task's first port, and the task exposes none"},
	}
	for _, tt := range tests {
		_, err := f.cube(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("cube %s: got error %v, want %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
	if n := len(f.rt.Starts()); n != 0 {
		t.Errorf("runtime starts after bad runs: got %d, want 0", n)
	}
}

func TestCLIResolve(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	web := f.start(t, "web")
	dup1 := f.start(t, "dup")
	if _, err := f.cube(t, "run", "--name", "dup", "cube-echo:latest"); err == nil || !strings.Contains(err.Error(), `Task.Name: "dup" is the name of task `+dup1.ID.String()) {
		t.Errorf("cube run of a name a running task holds: got %v, want the worker's conflict naming %s", err, dup1.ID)
	}
	stop(t, f, dup1.ID)
	dup2 := f.start(t, "dup") // an ended task's name may be taken again

	for _, ref := range []string{"web", web.ID.String(), web.ID.String()[:8], strings.ToUpper(web.ID.String()[:6])} {
		out, err := f.cube(t, "inspect", "-o", "json", ref)
		if err != nil {
			t.Errorf("cube inspect %s: %v", ref, err)
			continue
		}
		var got task.Task
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.ID != web.ID {
			t.Errorf("cube inspect %s: got %s (%v), want task %s", ref, got.ID, err, web.ID)
		}
	}

	// The name picks the task that holds it; once every one has ended, the newest.
	for _, want := range []uuid.UUID{dup2.ID, dup2.ID} {
		out, err := f.cube(t, "inspect", "-o", "json", "dup")
		var got task.Task
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.ID != want {
			t.Errorf("cube inspect dup: got %s, %v; want %s", got.ID, err, want)
		}
		stop(t, f, dup2.ID)
	}
	_, err := f.cube(t, "stop", "")
	if err == nil || err.Error() != "the task ID or name is empty" {
		t.Errorf("cube stop '': got %v", err)
	}
	_, err = f.cube(t, "inspect", "nope")
	if err == nil || err.Error() != `no task has the ID, ID prefix or name "nope"` {
		t.Errorf("cube inspect nope: got %v", err)
	}
	unknown := uuid.New()
	_, err = f.cube(t, "stop", unknown.String())
	if err == nil || err.Error() != "task "+unknown.String()+" not found" {
		t.Errorf("cube stop of an unknown full ID: got %v, want the worker's message", err)
	}

	// An ambiguous prefix: with enough tasks, some share a first hex digit.
	seen := map[byte][]task.Task{web.ID.String()[0]: {web}, dup1.ID.String()[0]: {dup1}}
	seen[dup2.ID.String()[0]] = append(seen[dup2.ID.String()[0]], dup2)
	for i := 0; ; i++ {
		var shared []task.Task
		for _, ts := range seen {
			if len(ts) > 1 {
				shared = ts
			}
		}
		if shared != nil {
			prefix := shared[0].ID.String()[:1]
			_, err := f.cube(t, "inspect", prefix)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the ID prefix %q matches", prefix)) || !strings.Contains(err.Error(), "give more of the ID") {
				t.Errorf("cube inspect %s: got %v, want an ambiguous prefix", prefix, err)
			}
			break
		}
		tk := f.start(t, fmt.Sprintf("t%d", i))
		seen[tk.ID.String()[0]] = append(seen[tk.ID.String()[0]], tk)
	}
}

// stop stops the task on the fake and waits until it is Completed.
func stop(t *testing.T, f *cliFake, id uuid.UUID) {
	t.Helper()
	if err := f.w.Stop(id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := f.w.Get(id); got.State == task.Completed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not complete within 5s", id)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestCLILsAndInspect(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	web := f.start(t, "web")
	out, err := f.cube(t, "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"ID", "NAME", "IMAGE", "STATE", "HEALTH", "PORTS", "RESTARTS", "AGE"}) {
		t.Errorf("ls header: got %q", lines[0])
	}
	if len(lines) != 2 {
		t.Fatalf("ls: got %d lines, want a header and one task:\n%s", len(lines), out)
	}
	hostPort := web.HostPorts["7777/tcp"][0].HostPort
	want := []string{web.ID.String()[:8], "web", "cube-echo:latest", "Running", "-", hostPort + "->7777/tcp", "0"}
	if got := strings.Fields(lines[1]); len(got) != 8 || !slices.Equal(got[:7], want) || !regexp.MustCompile(`^\d+s$`).MatchString(got[7]) {
		t.Errorf("ls row: got %q, want %q and an age in seconds", got, want)
	}

	out, err = f.cube(t, "inspect", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ID:         " + web.ID.String() + "\n", "Name:       web\n", "State:      Running\n",
		"Ports:      0.0.0.0:" + hostPort + "->7777/tcp\n", "Events:\n", "Received\n", "Started",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect: want %q in\n%s", want, out)
		}
	}

	stop(t, f, web.ID)
	// As docker ps: ls shows the tasks that have not ended, ls -a every one.
	if out, err := f.cube(t, "ls"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("ls with only a Completed task: got %q, %v; want the header alone", out, err)
	}
	out, _ = f.cube(t, "ls", "-a")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Fields(lines[1]); len(got) != 8 || got[3] != "Completed" || got[5] != "-" {
		t.Errorf("ls row of a Completed task: got %q, want state Completed and no ports", got)
	}
}

func TestCLIWaitShowsPullProgress(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	id := uuid.New()
	var mu sync.Mutex
	polls := 0
	steps := []task.Task{
		{State: task.Scheduled},
		{State: task.Scheduled, Pull: &task.PullProgress{Layers: 2, LayersDone: 0, Bytes: 1 << 20, BytesTotal: 4 << 20}},
		{State: task.Scheduled, Pull: &task.PullProgress{Layers: 2, LayersDone: 1, Bytes: 3 << 20, BytesTotal: 4 << 20}},
		{State: task.Running, HostPorts: task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}, {HostIP: "::", HostPort: "49153"}}}},
	}
	f.handle("/tasks/"+id.String(), func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tk := steps[min(polls, len(steps)-1)]
		polls++
		mu.Unlock()
		tk.ID, tk.Name, tk.Image = id, "web", "registry.example/big:1"
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(tk)
	})
	c, err := apiclient.New(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	var progressOut, notes bytes.Buffer
	got, err := waitTask(context.Background(), c, task.Task{ID: id, Name: "web", Image: "registry.example/big:1"}, &notes,
		newProgress(&progressOut, false, "registry.example/big:1"), time.Millisecond)
	if want := "waiting for task web (" + id.String()[:8] + ") to be Running\n"; notes.String() != want {
		t.Errorf("what waitTask says: got %q, want %q", notes.String(), want)
	}
	if err != nil || got.State != task.Running {
		t.Fatalf("waitTask: got %v, %v; want the Running task", got.State, err)
	}
	wantLines := "pulling registry.example/big:1: 0/2 layers, 1MiB of 4MiB (25%)\n" +
		"pulling registry.example/big:1: 1/2 layers, 3MiB of 4MiB (75%)\n"
	if progressOut.String() != wantLines {
		t.Errorf("progress, not a terminal: got %q, want %q", progressOut.String(), wantLines)
	}
	if want := "task web (" + id.String()[:8] + ") is Running, ports 49153->7777/tcp"; outcome(got) != want {
		t.Errorf("outcome: got %q, want %q", outcome(got), want)
	}
}

func TestCLIProgressRendering(t *testing.T) {
	t.Parallel()
	now := time.Now()
	pp := func(done int, b int64) *task.PullProgress {
		return &task.PullProgress{Layers: 3, LayersDone: done, Bytes: b, BytesTotal: 30 << 20}
	}
	// On a terminal, one line rewritten in place and ended at the end.
	var tty bytes.Buffer
	p := newProgress(&tty, true, "img")
	p.show(pp(0, 1<<20), now)
	p.show(pp(0, 1<<20), now) // unchanged: nothing written
	p.show(pp(1, 12<<20), now)
	p.end()
	want := "\rpulling img: 0/3 layers, 1MiB of 30MiB (3%)\x1b[K\rpulling img: 1/3 layers, 12MiB of 30MiB (40%)\x1b[K\n"
	if tty.String() != want {
		t.Errorf("terminal progress: got %q, want %q", tty.String(), want)
	}
	// Not on a terminal, a line when a layer is done or a second has passed.
	var plain bytes.Buffer
	p = newProgress(&plain, false, "img")
	p.show(pp(0, 1<<20), now)
	p.show(pp(0, 2<<20), now.Add(100*time.Millisecond)) // too soon
	p.show(pp(0, 3<<20), now.Add(1100*time.Millisecond))
	p.show(pp(1, 4<<20), now.Add(1200*time.Millisecond)) // a layer done
	p.end()
	want = "pulling img: 0/3 layers, 1MiB of 30MiB (3%)\npulling img: 0/3 layers, 3MiB of 30MiB (10%)\npulling img: 1/3 layers, 4MiB of 30MiB (13%)\n"
	if plain.String() != want {
		t.Errorf("plain progress: got %q, want %q", plain.String(), want)
	}
	if isTerminal(&plain) {
		t.Errorf("isTerminal(buffer): got true")
	}
}

// TestCLIContractRoutes drives cube logs, cube stats ID and cube events against handlers that
// follow the contract of the routes about to land.
func TestCLIContractRoutes(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	web := f.start(t, "web")
	var mu sync.Mutex
	var logQueries []string
	f.handle("/logs", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		logQueries = append(logQueries, r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "line 1\nline 2\n")
	})
	f.handle("/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" {
			api.New(f.w, api.Options{}).ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(apiclient.TaskStats{TaskID: web.ID, CPUPercent: 12.345, MemoryUsage: 5 << 20, MemoryLimit: 64 << 20,
			NetworkRx: 1536, NetworkTx: 0, BlockRead: 2 << 20, BlockWrite: 0, PIDs: 4})
	})
	f.handle("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
		for _, ev := range []apiclient.Event{
			{Seq: 1, Time: at, TaskID: web.ID, Name: "web", Type: task.RecordReceived, State: task.Pending},
			{Seq: 2, Time: at, TaskID: web.ID, Name: "web", Type: task.RecordStarted, State: task.Running, Message: "container abc"},
		} {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", ev.Seq, b)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})

	out, err := f.cube(t, "logs", "web")
	if err != nil || out != "line 1\nline 2\n" {
		t.Errorf("cube logs: got %q, %v", out, err)
	}
	f.cube(t, "logs", "-f", "--tail", "0", "--since", "10m", "-t", "web")
	f.cube(t, "logs", "--tail", "5", "web")
	if want := []string{"", "follow=true&since=10m&tail=0&timestamps=true", "tail=5"}; !slices.Equal(logQueries, want) {
		t.Errorf("logs queries: got %q, want %q", logQueries, want)
	}

	out, err = f.cube(t, "stats", "web")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^ID\s+NAME\s+CPU %\s+MEM USAGE / LIMIT\s+MEM %\s+NET I/O\s+BLOCK I/O\s+PIDS$`).MatchString(lines[0]) {
		t.Fatalf("cube stats web: got\n%s", out)
	}
	if want := []string{web.ID.String()[:8], "web", "12.35%", "5MiB", "/", "64MiB", "7.8%", "1.5KiB", "/", "0B", "2MiB", "/", "0B", "4"}; !slices.Equal(strings.Fields(lines[1]), want) {
		t.Errorf("cube stats web row: got %q, want %q", strings.Fields(lines[1]), want)
	}
	out, err = f.cube(t, "stats", "web", "-o", "json")
	var s apiclient.TaskStats
	if err != nil || json.Unmarshal([]byte(out), &s) != nil || s.PIDs != 4 {
		t.Errorf("cube stats web -o json: got %q, %v", out, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	out, err = cliCube(t, ctx, map[string]string{"CUBE_WORKER": f.addr}, "events")
	if err != nil {
		t.Fatalf("cube events ended by its context: got %v, want nil", err)
	}
	at := fmt.Sprintf("%-29s", "2025-01-02T03:04:05.000"+time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local).Format("Z07:00"))
	want := eventHeader + "\n" +
		fmt.Sprintf("%16d  ", 1) + at + "  web               " + web.ID.String()[:8] + "  Received       Pending\n" +
		fmt.Sprintf("%16d  ", 2) + at + "  web               " + web.ID.String()[:8] + "  Started        Running               container abc\n"
	if out != want {
		t.Errorf("cube events: got\n%q\nwant\n%q", out, want)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	out, _ = cliCube(t, ctx, map[string]string{"CUBE_WORKER": f.addr}, "events", "-o", "json")
	dec := json.NewDecoder(strings.NewReader(out))
	var n int
	for {
		var ev apiclient.Event
		if err := dec.Decode(&ev); err != nil {
			break
		}
		n++
	}
	if n != 2 {
		t.Errorf("cube events -o json: got %d JSON events in %q, want 2", n, out)
	}
}

func TestCLINodeStats(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	f.start(t, "web")
	out, err := f.cube(t, "stats")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^TASKS\s+MEMORY\s+DISK\s+LOAD 1m 5m 15m$`).MatchString(lines[0]) {
		t.Fatalf("cube stats: got\n%s", out)
	}
	if !regexp.MustCompile(`^1\s+\S+ / \S+ \(\d+%\)\s+\S+ / \S+ \(\d+%\)\s+[\d.]+ [\d.]+ [\d.]+$`).MatchString(lines[1]) {
		t.Errorf("cube stats row: got %q", lines[1])
	}
	out, err = f.cube(t, "stats", "-o", "json")
	var s apiclient.Stats
	if err != nil || json.Unmarshal([]byte(out), &s) != nil || s.TaskCount != 1 || s.MemStats == nil {
		t.Errorf("cube stats -o json: got %q, %v", out, err)
	}
}

func TestCLIWorkerFlagsAndErrors(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	// --worker beats CUBE_WORKER.
	out, err := cliCube(t, context.Background(), map[string]string{"CUBE_WORKER": "127.0.0.1:1"}, "ls", "-w", f.addr, "-o", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("cube ls -w: got %q, %v; want []", out, err)
	}
	_, err = cliCube(t, context.Background(), map[string]string{"CUBE_WORKER": "127.0.0.1:1"}, "ls")
	if err == nil || err.Error() != "cannot reach the worker at 127.0.0.1:1: connection refused" {
		t.Errorf("cube ls of a closed port: got %v", err)
	}
	_, err = cliCube(t, context.Background(), nil, "ls", "-w", "ftp://x:1")
	if err == nil || !strings.HasPrefix(err.Error(), `--worker: "ftp://x:1" is not a worker address`) {
		t.Errorf("cube ls -w ftp://x:1: got %v", err)
	}
	_, err = cliCube(t, context.Background(), nil, "ls", "--token", "a", "--token-file", "b")
	if err == nil || err.Error() != "give --token or --token-file, not both" {
		t.Errorf("--token with --token-file: got %v", err)
	}
	_, err = cliCube(t, context.Background(), nil, "ls", "--cert", "c.pem")
	if err == nil || err.Error() != "a client certificate needs both --cert and --key" {
		t.Errorf("--cert without --key: got %v", err)
	}

	// The token goes out from --token, --token-file or CUBE_TOKEN.
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"HTTPStatusCode":401,"Message":"a bearer token is required"}`))
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("from-file\n"), 0o600)
	env := map[string]string{"CUBE_WORKER": srv.URL, "CUBE_TOKEN": "from-env"}
	for _, args := range [][]string{{"ls", "--token", "from-flag"}, {"ls", "--token-file", tokenFile}, {"ls"}} {
		_, err := cliCube(t, context.Background(), env, args...)
		if err == nil || err.Error() != "the worker refused the token: a bearer token is required" {
			t.Errorf("cube %v against a 401: got %v, want the worker's message", args, err)
		}
	}
	if want := []string{"Bearer from-flag", "Bearer from-file", "Bearer from-env"}; !slices.Equal(auths, want) {
		t.Errorf("Authorization headers: got %q, want %q", auths, want)
	}
}

func TestCLILogFormat(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := run(ctx, []string{"worker", "--port", "0", "--name", "json-logs", "--log-format", "json", "--data-dir", t.TempDir(), "--lock-dir", lockDir(t)}, func(string) string { return "" }, io.Discard, &logs)
	if err != nil {
		t.Fatalf("cube worker --log-format json: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("log line %q: not JSON: %v", l, err)
			continue
		}
		if m["worker"] != "json-logs" || m["msg"] == nil || m["level"] == nil || m["time"] == nil {
			t.Errorf("log line %q: want time, level, msg and worker=json-logs", l)
		}
	}
	err = run(context.Background(), []string{"worker", "--log-format", "xml"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || err.Error() != `--log-format "xml": want text or json` {
		t.Errorf("--log-format xml: got %v", err)
	}
}

func TestCLIPorts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		t        task.Task
		short    string
		withAddr string
	}{
		{task.Task{}, "", ""},
		{task.Task{ExposedPorts: task.PortSet{"7777/tcp": {}}, PortBindings: map[string]string{"80/udp": "8080"}}, "8080->80/udp, 7777/tcp", "8080->80/udp, 7777/tcp"},
		{task.Task{HostPorts: task.PortMap{
			"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}, {HostIP: "::", HostPort: "49154"}},
			"80/tcp":   {{HostIP: "0.0.0.0", HostPort: "8080"}, {HostIP: "::", HostPort: "8080"}},
			"9000/udp": {{HostIP: "::", HostPort: "49155"}},
			"53/udp":   {},
		}}, "53/udp, 8080->80/tcp, 49153->7777/tcp, 49155->9000/udp",
			"53/udp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 0.0.0.0:49153->7777/tcp, [::]:49154->7777/tcp, [::]:49155->9000/udp"},
	}
	for _, tt := range tests {
		if got := ports(tt.t, false); got != tt.short {
			t.Errorf("ports(%v, false): got %q, want %q", tt.t.HostPorts, got, tt.short)
		}
		if got := ports(tt.t, true); got != tt.withAddr {
			t.Errorf("ports(%v, true): got %q, want %q", tt.t.HostPorts, got, tt.withAddr)
		}
	}
}

func TestCLIWaitInterrupted(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	release := make(chan struct{})
	f.rt.StartHook = func(ctx context.Context, _ task.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	defer close(release)
	// The interrupt comes while cube waits: at its first look at the task, which it takes only
	// once the POST was answered, however long that took on a loaded machine. The deadline only
	// bounds a test that went wrong.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.mu.Lock()
	f.seen = func(r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/tasks/") {
			cancel()
		}
	}
	f.mu.Unlock()
	_, err := cliCube(t, ctx, map[string]string{"CUBE_WORKER": f.addr}, "run", "--name", "slow", "--wait", "cube-echo:latest")
	if err == nil || !regexp.MustCompile(`^stopped waiting; task slow \([0-9a-f]{8}\) goes on \([0-9a-f-]{36}\)$`).MatchString(err.Error()) {
		t.Errorf("cube run --wait, interrupted: got %v, want it to say the task goes on", err)
	}
}

// cube events prints a reset as what it is: no task's change, but word that events were lost.
func TestEventLineOfAReset(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	line := eventLine(apiclient.Event{Seq: 9, Time: at, Type: apiclient.EventReset, Message: "cannot resume after change 3: read the tasks again"})
	if !regexp.MustCompile(`  Reset +- +cannot resume after change 3: read the tasks again$`).MatchString(line) || strings.Contains(line, "Pending") {
		t.Errorf("reset line: got %q, want the time, Reset and the message, and no task state", line)
	}
	paused := eventLine(apiclient.Event{Seq: 10, Time: at, TaskID: uuid.New(), Name: "web", Type: task.RecordPaused, State: task.Running})
	if !strings.Contains(paused, "web") || !regexp.MustCompile(`  Paused +Running$`).MatchString(paused) {
		t.Errorf("paused line: got %q, want the task, Paused and Running", paused)
	}
}

func TestTaskTableShowsAPause(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	tk := task.Task{ID: uuid.New(), Name: "web", Image: "cube-echo:latest", State: task.Running, Paused: true}
	if err := writeTaskTable(&b, []task.Task{tk}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Running (paused)") {
		t.Errorf("cube ls: got\n%s\nwant the state Running (paused)", b.String())
	}
}

// cube rm refuses a task that has not ended, names -f, and leaves it be; with -f it removes
// each task named; a removed task is not found again.
func TestCLIRm(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	web := f.start(t, "web")
	if out, err := f.cube(t, "rm", "web"); err == nil || !strings.Contains(err.Error(), "is Running") || !strings.Contains(err.Error(), "-f") {
		t.Errorf("rm of a running task: got %q, %v; want it refused, naming -f", out, err)
	}
	if got, err := f.w.Get(web.ID); err != nil || got.State != task.Running {
		t.Errorf("after the refused rm: got %v, %v; want it Running", got.State, err)
	}
	db := f.start(t, "db")
	out, err := f.cube(t, "rm", "-f", "web", "db")
	if err != nil || out != web.ID.String()+"\n"+db.ID.String()+"\n" {
		t.Fatalf("rm -f web db: got %q, %v; want both IDs", out, err)
	}
	for _, id := range []uuid.UUID{web.ID, db.ID} {
		if _, err := f.w.Get(id); task.ErrorCode(err) != task.ENOTFOUND {
			t.Errorf("task %s after rm -f: got %v, want not found", id, err)
		}
	}
	if _, err := f.cube(t, "rm", "web"); err == nil {
		t.Error("rm of a removed task: got no error")
	}
}
