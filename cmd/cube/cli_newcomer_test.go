package main

// Fast tests of what a newcomer meets first: flags anywhere on the line, versions, clear errors
// from things that are not workers, cube wait, run --wait's health, crash loops and unconfirmed
// states in ls, task and event files, and events as JSON.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

func TestCLIFlagsAnywhereAndVersion(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	for _, args := range [][]string{
		{"-w", f.addr, "ls", "-o", "json"},
		{"--worker", f.addr, "--token", "ignored-by-an-open-worker", "ls", "-o", "json"},
		{"ls", "-o", "json", "-w", f.addr},
	} {
		out, err := cliCube(t, context.Background(), nil, args...)
		if err != nil || strings.TrimSpace(out) != "[]" {
			t.Errorf("cube %s: got %q, %v; want []", strings.Join(args, " "), out, err)
		}
	}

	// cube worker refuses the client flags, saying what it takes instead.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-w", "127.0.0.1:1", "worker"}, "--worker is a client flag, for the commands that talk to a worker; the worker listens on --host and --port"},
		{[]string{"worker", "--token", "0123456789abcdef"}, "--token is a client flag, for the commands that talk to a worker; the worker takes its token from --token-file or CUBE_TOKEN"},
		{[]string{"--ca", "ca.pem", "worker"}, "--ca is a client flag, for the commands that talk to a worker; the worker serves TLS with --tls-cert and --tls-key"},
	} {
		_, err := cliCube(t, context.Background(), nil, tt.args...)
		if err == nil || err.Error() != tt.want {
			t.Errorf("cube %s: got %v, want %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}

	help, err := cliCube(t, context.Background(), nil, "worker", "--help")
	if err != nil || strings.Contains(help, "--worker") || strings.Contains(help, "--ca ") || !strings.Contains(help, "--token-file") {
		t.Errorf("cube worker --help: got %v and\n%s\nwant its own flags, not the client's", err, help)
	}
	if help, _ := cliCube(t, context.Background(), nil, "ls", "--help"); !strings.Contains(help, "--worker") {
		t.Errorf("cube ls --help: got\n%s\nwant the client flags", help)
	}
	out, err := cliCube(t, context.Background(), nil, "--version")
	if want := "cube " + version + " (commit " + commit + ")\n"; err != nil || out != want {
		t.Errorf("cube --version: got %q, %v; want %q", out, err, want)
	}
	out, err = f.cube(t, "version")
	if want := "Client: cube " + version + " (commit " + commit + ")\nWorker: cube v1.2.3 (commit abc1234), named " + t.Name() + ", at " + f.addr + "\n"; err != nil || out != want {
		t.Errorf("cube version: got %q, %v; want %q", out, err, want)
	}
	out, err = f.cube(t, "version", "-o", "json")
	var v versionInfo
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Client.Version != version || v.Worker == nil || v.Worker.Commit != "abc1234" {
		t.Errorf("cube version -o json: got %q, %v", out, err)
	}
	out, err = cliCube(t, context.Background(), map[string]string{"CUBE_WORKER": "127.0.0.1:1"}, "version")
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the worker at 127.0.0.1:1") || out != "Client: cube "+version+" (commit "+commit+")\n" {
		t.Errorf("cube version without a worker: got %q, %v; want the client's version and the error", out, err)
	}
}

// A -w that points at something else than a worker says so, with what it answered.
func TestCLINotAWorker(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		handle http.HandlerFunc
		want   string
	}{
		{"a web page", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<!doctype html><html><body>Welcome to nginx!</body></html>"))
		}, "is not a cube worker (it answered 200 OK, text/html)"},
		{"a 404", http.NotFound, "is not a cube worker (it answered 404 Not Found, text/plain)"},
		{"JSON of another kind", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"items": 3}`))
		}, "decode the answer to GET /tasks"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handle)
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			_, err := cliCube(t, context.Background(), nil, "ls", "-w", addr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("cube ls -w %s: got %v, want %q", addr, err, tt.want)
			}
			if tt.name != "JSON of another kind" && !strings.HasPrefix(err.Error(), addr+" is not a cube worker") {
				t.Errorf("cube ls -w %s: got %v, want it to start with the address", addr, err)
			}
		})
	}
}

func TestCLIWait(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	job := f.start(t, "job")
	other := f.start(t, "other")
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := f.cube(t, "wait", "job", other.ID.String()[:8])
		done <- result{out, err}
	}()
	if err := f.rt.Exit(job.ContainerID, 3, false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("cube wait returned before every task ended: %q, %v", r.out, r.err)
	case <-time.After(300 * time.Millisecond): // it has had time to see job end, and waits on
	}
	if err := f.rt.Exit(other.ContainerID, 0, false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.out != "3\n0\n" {
			t.Errorf("cube wait job other: got %q, %v; want 3 and 0", r.out, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cube wait did not return within 10s of the tasks' ends")
	}

	// A task that never ran, and one that does not exist.
	f.rt.StartHook = func(context.Context, task.Task) error {
		return task.Errorf(task.EINVALID, "image pull failed: nope:1: not found")
	}
	out, err := f.cube(t, "run", "--name", "never", "nope:1")
	if err != nil {
		t.Fatal(err)
	}
	out, err = f.cube(t, "wait", strings.TrimSpace(out), "no-such-task")
	if out != "125\n" || err == nil || err.Error() != "1 of the 2 tasks to wait for were not found" {
		t.Errorf("cube wait never no-such-task: got %q, %v; want 125 and an error", out, err)
	}
}

// run --wait waits for a task with a health check to be healthy, and fails when it ends Failed
// or turns unhealthy first.
func TestCLIRunWaitsForHealth(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		steps   []task.Task
		wantErr string
		wantOut string
	}{
		{"healthy", []task.Task{{State: task.Running, HealthStatus: task.HealthStarting}, {State: task.Running, HealthStatus: task.HealthHealthy}}, "",
			`^task web \([0-9a-f]{8}\) is Running and healthy\n$`},
		{"fails first", []task.Task{{State: task.Running, HealthStatus: task.HealthStarting}, {State: task.Failed, ExitCode: 2, Error: "exited with code 2"}},
			`^task web \([0-9a-f]{8}\) Failed: exited with code 2$`, `^$`},
		{"unhealthy", []task.Task{{State: task.Running, HealthStatus: task.HealthStarting}, {State: task.Running, HealthStatus: task.HealthUnhealthy,
			LastHealthCheck: &task.HealthResult{Output: "GET /health: 500"}}}, `^task web \([0-9a-f]{8}\) is Running but unhealthy \(GET /health: 500\)$`, `^$`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newCLIFake(t)
			id := uuid.New()
			file := filepath.Join(t.TempDir(), "event.json")
			os.WriteFile(file, []byte(`{"State": 2, "Task": {"ID": "`+id.String()+`", "Name": "web", "Image": "cube-echo:latest", "ExposedPorts": {"7777/tcp": {}}, "HealthCheck": "/health"}}`), 0o600)
			var mu sync.Mutex
			polls := 0
			f.handle("/tasks/"+id.String(), func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				tk := tt.steps[min(polls, len(tt.steps)-1)]
				polls++
				mu.Unlock()
				tk.ID, tk.Name, tk.Image, tk.HealthCheck = id, "web", "cube-echo:latest", "/health"
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(tk)
			})
			out, err := f.cube(t, "run", "-f", file, "--wait")
			if (tt.wantErr == "") != (err == nil) || err != nil && !regexp.MustCompile(tt.wantErr).MatchString(err.Error()) {
				t.Errorf("cube run --wait: got error %v, want %s", err, orDash(tt.wantErr))
			}
			if !regexp.MustCompile(tt.wantOut).MatchString(out) {
				t.Errorf("cube run --wait: got %q, want %s", out, tt.wantOut)
			}
		})
	}
}

func TestCLICrashLoopAndUnconfirmed(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	loop := task.Task{State: task.Scheduled, RestartCount: 3, ExitCode: 1,
		Error: "exited with code 1; back-off: restarting in 4s (at 2024-05-01T12:00:04Z)"}
	for _, tt := range []struct {
		t    task.Task
		at   time.Time
		want string
	}{
		{loop, now, "Restarting (1) in 4s"},
		{loop, now.Add(3500 * time.Millisecond), "Restarting (1) in 1s"},
		{loop, now.Add(5 * time.Second), "Restarting (1) now"},
		{task.Task{State: task.Scheduled}, now, "Scheduled"},
		{task.Task{State: task.Running, Unconfirmed: "the Docker Engine has not answered"}, now, "Running (unconfirmed)"},
	} {
		if got := stateOf(tt.t, tt.at); got != tt.want {
			t.Errorf("stateOf(%v, %q) at %v: got %q, want %q", tt.t.State, tt.t.Error, tt.at.Sub(now), got, tt.want)
		}
	}

	// A task waiting to restart, on the worker: ls shows the crash loop.
	f := newCLIFake(t)
	f.start(t, "steady")
	spec := task.Task{ID: uuid.New(), Name: "crashy", Image: "cube-echo:latest", RestartPolicy: task.RestartAlways,
		Restart: &task.RestartSpec{Delay: task.Duration(time.Hour)}}
	if _, err := f.w.Submit(task.Event{ID: uuid.New(), State: task.Running, Task: spec}); err != nil {
		t.Fatal(err)
	}
	got := waitFake(t, f, spec.ID, "running", func(t task.Task) bool { return t.State == task.Running })
	if err := f.rt.Exit(got.ContainerID, 7, false); err != nil {
		t.Fatal(err)
	}
	waitFake(t, f, spec.ID, "waiting to restart", func(t task.Task) bool { return t.State == task.Scheduled && t.RestartCount == 1 })
	out, err := f.cube(t, "ls")
	if err != nil || !regexp.MustCompile(`crashy +cube-echo:latest +Restarting \(7\) in \d+m `).MatchString(out) {
		t.Errorf("cube ls with a task waiting to restart: got\n%s%v\nwant it Restarting (7) in about an hour", out, err)
	}

	// The Engine stops answering: ls marks each state and says why on stderr; inspect says why.
	f.rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "ping docker: Cannot connect to the Docker daemon"))
	waitFake(t, f, spec.ID, "unconfirmed", func(t task.Task) bool { return t.Unconfirmed != "" })
	var stdout, stderr strings.Builder
	if err := run(context.Background(), []string{"ls", "-w", f.addr}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "Running (unconfirmed)") || !strings.HasPrefix(stderr.String(), "unconfirmed: the Docker Engine has not answered since ") {
		t.Errorf("cube ls with the Engine down: got\n%s\nand on stderr %q; want the states marked and the reason", stdout.String(), stderr.String())
	}
	out, err = f.cube(t, "inspect", "steady")
	if err != nil || !regexp.MustCompile(`(?m)^Unconfirmed: +the Docker Engine has not answered since .*Cannot connect to the Docker daemon`).MatchString(out) {
		t.Errorf("cube inspect with the Engine down: got\n%s%v\nwant an Unconfirmed row", out, err)
	}
}

// waitFake polls the fake's worker for the task until cond holds.
func waitFake(t *testing.T, f *cliFake, id uuid.UUID, what string, cond func(task.Task) bool) task.Task {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := f.w.Get(id)
		if err == nil && cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s within 5s: %+v", id, what, got)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// cube run -f takes the examples' task file and event file; an event file is sent as it is, so
// sending it again changes nothing, and its IDs may be left out.
func TestCLIRunTaskAndEventFiles(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	for _, file := range []string{"../../examples/task.json", "../../examples/event.json"} {
		out, err := f.cube(t, "run", "-f", file)
		if err != nil {
			t.Fatalf("cube run -f %s: %v", file, err)
		}
		id, err := uuid.Parse(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("cube run -f %s: got %q, want the task's ID", file, out)
		}
		got := waitFake(t, f, id, "running", func(t task.Task) bool { return t.State == task.Running })
		if got.Image != "cube-echo:latest" || len(got.Env) != 1 || got.Env[0] != "GREETING=hi" {
			t.Errorf("the task of %s: got image %s env %v", file, got.Image, got.Env)
		}
	}
	if out, err := f.cube(t, "run", "-f", "../../examples/event.json"); err != nil || strings.TrimSpace(out) != "21b23589-5d2d-4731-b5c9-a97e9832d021" {
		t.Errorf("cube run -f examples/event.json again: got %q, %v; want the same task, unchanged", out, err)
	}
	if n := len(f.rt.Starts()); n != 2 {
		t.Errorf("starts: got %d, want 2 (the event file's second run changes nothing)", n)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "event.json")
	os.WriteFile(file, []byte(`{"State": 2, "Task": {"Name": "no-ids", "Image": "cube-echo:latest"}}`), 0o600)
	out, err := f.cube(t, "run", "-f", file, "--name", "renamed")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.w.Get(uuid.MustParse(strings.TrimSpace(out))); got.Name != "renamed" {
		t.Errorf("an event file without IDs, --name renamed: got name %q", got.Name)
	}
	os.WriteFile(file, []byte(`{"ID": "x", "State": 2, "Task": {"Image": "cube-echo:latest"}}`), 0o600)
	if _, err := f.cube(t, "run", "-f", file); err == nil || err.Error() != "-f "+file+`: ID: "x" is not a UUID` {
		t.Errorf("an event file with a bad ID: got %v", err)
	}
	os.WriteFile(file, []byte(`{"State": 2, "Task": {"Image": "cube-echo:latest", "Replicas": 3}}`), 0o600)
	if _, err := f.cube(t, "run", "-f", file); err == nil || err.Error() != "-f "+file+`: not a task event: unknown field "Replicas"` {
		t.Errorf("an event file with an unknown field: got %v", err)
	}
}

// cube events -o json prints each event as the stream's data carries it.
func TestCLIEventsJSONIsTheStreams(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	f.start(t, "web")
	req, _ := http.NewRequest(http.MethodGet, "http://"+f.addr+"/events", nil)
	req.Header.Set("Last-Event-ID", "0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	sc := bufio.NewScanner(resp.Body)
	// Received, Created and Started (accepted is Scheduled: no change of state comes between).
	for sc.Scan() && len(data) < 3 {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			data = append(data, d)
		}
	}
	resp.Body.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	out, err := cliCube(t, ctx2, map[string]string{"CUBE_WORKER": f.addr}, "events", "--after", "0", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(data) != 3 || len(lines) != 3 {
		t.Fatalf("events: got %d from the stream, %d from cube events -o json; want 3 each:\n%s", len(data), len(lines), out)
	}
	for i := range data {
		if lines[i] != data[i] {
			t.Errorf("event %d: cube events -o json printed\n%s\nthe stream carried\n%s", i+1, lines[i], data[i])
		}
	}
	var ev apiclient.Event
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Seq <= 0 || ev.Type != task.RecordReceived {
		t.Errorf("the first event: got %+v, %v", ev, err)
	}
}

func TestCLIPort(t *testing.T) {
	t.Parallel()
	f := newCLIFake(t)
	web := f.start(t, "web")
	hp := web.HostPorts["7777/tcp"][0]
	addr := hp.HostIP + ":" + hp.HostPort
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"port", "web", "7777"}, addr + "\n"},
		{[]string{"port", "web", "7777/tcp"}, addr + "\n"},
		{[]string{"port", "web"}, "7777/tcp -> " + addr + "\n"},
	} {
		if out, err := f.cube(t, tt.args...); err != nil || out != tt.want {
			t.Errorf("cube %s: got %q, %v; want %q", strings.Join(tt.args, " "), out, err, tt.want)
		}
	}
	if _, err := f.cube(t, "port", "web", "8080"); err == nil || !strings.HasPrefix(err.Error(), "task web (") || !strings.HasSuffix(err.Error(), "publishes no port 8080/tcp (it is Running)") {
		t.Errorf("cube port web 8080: got %v", err)
	}
}
