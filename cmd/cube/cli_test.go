package main

// The client commands driven as a user drives them, against `cube worker` running in-process on
// the real Docker Engine.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// cube runs the command line with args against the daemon, named by CUBE_WORKER, and returns
// its standard output and error.
func (d *daemon) cube(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return cliCube(t, ctx, map[string]string{"CUBE_WORKER": strings.TrimPrefix(d.url, "http://")}, args...)
}

// mustCube is cube for a command that must succeed.
func (d *daemon) mustCube(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.cube(t, args...)
	if err != nil {
		t.Fatalf("cube %s: %v", strings.Join(args, " "), err)
	}
	return out
}

var outcomeRE = regexp.MustCompile(`^task web \(([0-9a-f]{8})\) is Running and healthy, ports (\d+)->7777/tcp\n$`)

func TestCLIEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)

	// cube run --wait: the outcome line, and the task answers on its port.
	out := d.mustCube(t, "run", "--name", "web", "-p", ":7777", "-e", "GREETING=hi", "--memory", "64m",
		"--health-path", "/health", "--wait", testenv.EchoImage, "--", "--listen", ":7777", "--print", "hello", "--lines", "3", "--interval", "1ms")
	m := outcomeRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("cube run --wait: got %q, want %s", out, outcomeRE)
	}
	prefix, hostPort := m[1], m[2]
	if body := testenv.GetWithin(t, "http://127.0.0.1:"+hostPort+"/health", 10*time.Second); body != "ok" {
		t.Errorf("the task's published port: got %q, want ok", body)
	}

	// cube run -f without --wait prints the ID.
	file := filepath.Join(t.TempDir(), "task.json")
	if err := os.WriteFile(file, []byte(`{"Name": "filed", "Image": "`+testenv.EchoImage+`", "Cmd": ["--listen", ":7777"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out = d.mustCube(t, "run", "-f", file)
	filedID, err := uuid.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("cube run -f: got %q, want a task ID", out)
	}
	d.waitState(t, filedID, task.Running, 30*time.Second)

	// A task that fails: one clear error, no output.
	out, err = d.cube(t, "run", "--name", "broken", "--wait", "cube-test/no-such-image:v1")
	if err == nil || !regexp.MustCompile(`^task broken \([0-9a-f]{8}\) Failed: image pull failed`).MatchString(err.Error()) || out != "" {
		t.Errorf("cube run --wait of a missing image: got output %q, error %v; want a Failed error line", out, err)
	}

	// cube ls: the tasks that have not ended; -a: all, as a table and as JSON.
	if out := d.mustCube(t, "ls"); strings.Count(out, "\n") != 3 || strings.Contains(out, "broken") {
		t.Errorf("cube ls: got\n%s\nwant a header, web and filed, not the Failed task", out)
	}
	out = d.mustCube(t, "ls", "-a")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"ID", "NAME", "IMAGE", "STATE", "HEALTH", "PORTS", "RESTARTS", "AGE"}) {
		t.Errorf("ls header: got %q", lines[0])
	}
	if len(lines) != 4 {
		t.Fatalf("ls: got %d lines, want a header and 3 tasks:\n%s", len(lines), out)
	}
	web := strings.Fields(lines[1])
	if len(web) != 8 || web[0] != prefix || web[1] != "web" || web[2] != testenv.EchoImage || web[3] != "Running" ||
		(web[4] != "starting" && web[4] != "healthy") || web[5] != hostPort+"->7777/tcp" || web[6] != "0" {
		t.Errorf("ls row of web: got %q", web)
	}
	if filed := strings.Fields(lines[2]); len(filed) != 8 || filed[1] != "filed" || filed[3] != "Running" || filed[5] != "-" {
		t.Errorf("ls row of filed: got %q", filed)
	}
	if broken := strings.Fields(lines[3]); len(broken) != 8 || broken[1] != "broken" || broken[3] != "Failed" {
		t.Errorf("ls row of broken: got %q", broken)
	}
	var list []task.Task
	if err := json.Unmarshal([]byte(d.mustCube(t, "ls", "-a", "-o", "json")), &list); err != nil || len(list) != 3 || list[0].Name != "web" {
		t.Errorf("ls -a -o json: got %d tasks (%v), want 3, web first", len(list), err)
	}

	// cube inspect, by name and by prefix.
	out = d.mustCube(t, "inspect", "web")
	for _, want := range []string{"Name:          web\n", "State:         Running\n", "Ports:         0.0.0.0:" + hostPort + "->7777/tcp", "Memory:        64MiB\n", "Health check:  GET /health\n", "Env:           GREETING=hi\n", "Events:\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect web: want %q in\n%s", want, out)
		}
	}
	var webTask task.Task
	if err := json.Unmarshal([]byte(d.mustCube(t, "inspect", prefix, "-o", "json")), &webTask); err != nil || webTask.Name != "web" || webTask.Memory != 64<<20 {
		t.Fatalf("inspect %s -o json: got %+v, %v", prefix, webTask, err)
	}

	// Unknown IDs and names: the error line.
	if _, err := d.cube(t, "inspect", "nope"); err == nil || err.Error() != `no task has the ID, ID prefix or name "nope"` {
		t.Errorf("inspect nope: got %v", err)
	}
	unknown := uuid.NewString()
	if _, err := d.cube(t, "stop", unknown); err == nil || err.Error() != "task "+unknown+" not found" {
		t.Errorf("stop of an unknown ID: got %v, want the worker's message", err)
	}

	// cube stats: the node.
	out = d.mustCube(t, "stats")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "2 ") {
		t.Errorf("cube stats: got\n%s\nwant a row with 2 tasks", out)
	}

	// Logs, task stats, events.
	t.Run("logs", func(t *testing.T) {
		// --lines 3 numbers its lines: "hello 1" to "hello 3".
		if out := d.mustCube(t, "logs", "web"); out != "hello 1\nhello 2\nhello 3\n" {
			t.Errorf("cube logs web: got %q, want hello 1 to 3", out)
		}
		if out := d.mustCube(t, "logs", "--tail", "1", "web"); out != "hello 3\n" {
			t.Errorf("cube logs --tail 1 web: got %q, want the last line", out)
		}
		if out := d.mustCube(t, "logs", "--tail", "0", "web"); out != "" {
			t.Errorf("cube logs --tail 0 web: got %q, want nothing", out)
		}
		ts, text, _ := strings.Cut(d.mustCube(t, "logs", "-t", "--tail", "1", "--since", "1h", prefix), " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || text != "hello 3\n" {
			t.Errorf("cube logs -t --tail 1 --since 1h: got %q %q, want a time and the last line", ts, text)
		}
		// -f follows until the task ends.
		done := make(chan string, 1)
		go func() {
			out, err := d.cube(t, "logs", "-f", "--tail", "0", "filed")
			if err != nil {
				t.Errorf("cube logs -f filed: %v", err)
			}
			done <- out
		}()
		time.Sleep(500 * time.Millisecond) // the follow is under way
		d.mustCube(t, "stop", "filed")
		select {
		case out := <-done:
			if out != "" {
				t.Errorf("cube logs -f of a quiet task: got %q, want nothing", out)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("cube logs -f did not end when the task ended")
		}
		d.waitState(t, filedID, task.Completed, 30*time.Second) // stopped, and its container removed
		if _, err := d.cube(t, "logs", "filed"); err == nil || !strings.Contains(err.Error(), "has no container") {
			t.Errorf("cube logs of a task without a container: got %v, want the worker's 409 message", err)
		}
	})
	t.Run("stats", func(t *testing.T) {
		out := d.mustCube(t, "stats", "web")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], prefix+" ") || !strings.Contains(lines[1], "/ 64MiB") {
			t.Errorf("cube stats web: got\n%s\nwant a row for web with its 64MiB limit", out)
		}
		var s map[string]any
		if err := json.Unmarshal([]byte(d.mustCube(t, "stats", "web", "-o", "json")), &s); err != nil || s["TaskID"] != webTask.ID.String() {
			t.Errorf("cube stats web -o json: got %v, %v", s, err)
		}
		if _, err := d.cube(t, "stats", "broken"); err == nil || !strings.Contains(err.Error(), "is not running") {
			t.Errorf("cube stats of a Failed task: got %v, want the worker's 409 message", err)
		}
	})
	t.Run("events", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out, err := cliCube(t, ctx, map[string]string{"CUBE_WORKER": strings.TrimPrefix(d.url, "http://")}, "events", "--after", "0")
		if err != nil {
			t.Fatalf("cube events --after 0: %v", err)
		}
		// The Started record comes with the change to Running, the health check starting.
		for _, re := range []string{`(?m)^ +EVENT +TIME +NAME +ID +TYPE +STATE +MESSAGE$`, `(?m)^ *\d+  \S+ +web +` + prefix + `  Received +Scheduled$`,
			`(?m)^ *\d+  \S+ +web +` + prefix + `  Started +Running starting +container [0-9a-f]{12}$`,
			`(?m)^ *\d+  \S+ +broken +[0-9a-f]{8}  Failed +Failed +image pull failed`} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("cube events --after 0: got\n%s\nwant a line matching %q", out, re)
			}
		}
	})

	// cube wait prints the exit code when the task ends; a task that fails before it is
	// healthy makes run --wait fail.
	t.Run("wait", func(t *testing.T) {
		d.mustCube(t, "run", "--name", "job", testenv.EchoImage, "--", "--print", "bye", "--sleep", "1s", "--exit", "3")
		if out := d.mustCube(t, "wait", "job"); out != "3\n" {
			t.Errorf("cube wait job: got %q, want 3", out)
		}
		out, err := d.cube(t, "run", "--name", "dies", "-p", ":7777", "--health-path", "/health", "--wait", testenv.EchoImage, "--", "--sleep", "1s", "--exit", "2")
		if err == nil || !regexp.MustCompile(`^task dies \([0-9a-f]{8}\) Failed: exited with code 2`).MatchString(err.Error()) || out != "" {
			t.Errorf("cube run --wait of a task that fails before it is healthy: got %q, %v; want a Failed error", out, err)
		}
		if out, err := d.cube(t, "wait", "broken", "no-such-task"); err == nil || out != "125\n" {
			t.Errorf("cube wait broken no-such-task: got %q, %v; want 125 for the task that never ran, and an error", out, err)
		}
	})

	// cube stop, by prefix: the ID, and the task ends Completed.
	out = d.mustCube(t, "stop", prefix)
	if strings.TrimSpace(out) != webTask.ID.String() {
		t.Errorf("cube stop %s: got %q, want the task's ID", prefix, out)
	}
	d.waitState(t, webTask.ID, task.Completed, 30*time.Second)
	d.mustCube(t, "stop", "filed") // already stopped by the logs subtest: nothing to do
	d.waitState(t, filedID, task.Completed, 30*time.Second)
}

// TestCLISecuredWorker drives the client commands against a worker that asks for a token and a
// client certificate over TLS.
func TestCLISecuredWorker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "cube test CA")
	server := ca.Issue(t, "cube worker", x509.ExtKeyUsageServerAuth)
	cli := ca.Issue(t, "cube cli", x509.ExtKeyUsageClientAuth)
	tokenFile := writeFile(t, dir, "token", testToken, 0o600)
	d := startDaemon(t, "--token-file", tokenFile,
		"--tls-cert", writeFile(t, dir, "server.pem", server.CertPEM, 0o644),
		"--tls-key", writeFile(t, dir, "server-key.pem", server.KeyPEM, 0o600),
		"--tls-client-ca", writeFile(t, dir, "ca.pem", ca.CertPEM, 0o644))
	addr := strings.TrimPrefix(d.url, "http://")
	tlsFlags := []string{"-w", addr, "--ca", filepath.Join(dir, "ca.pem"),
		"--cert", writeFile(t, dir, "cli.pem", cli.CertPEM, 0o644), "--key", writeFile(t, dir, "cli-key.pem", cli.KeyPEM, 0o600)}
	ctx := context.Background()

	out, err := cliCube(t, ctx, nil, append([]string{"ls", "--token-file", tokenFile}, tlsFlags...)...)
	if err != nil || !strings.HasPrefix(out, "ID ") {
		t.Errorf("cube ls with the token file, over mutual TLS: got %q, %v; want the table", out, err)
	}
	out, err = cliCube(t, ctx, map[string]string{"CUBE_TOKEN": testToken}, append([]string{"ls", "-o", "json"}, tlsFlags...)...)
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("cube ls with CUBE_TOKEN: got %q, %v; want []", out, err)
	}
	_, err = cliCube(t, ctx, nil, append([]string{"ls"}, tlsFlags...)...)
	if err == nil || err.Error() != "the worker wants a token: pass --token or --token-file (or set CUBE_TOKEN)" {
		t.Errorf("cube ls without a token: got %v, want it to name --token", err)
	}
	// The client flags stand anywhere on the line.
	out, err = cliCube(t, ctx, nil, append(append([]string{"--token", testToken}, tlsFlags...), "ls", "-o", "json")...)
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("cube --token … -w … ls: got %q, %v; want []", out, err)
	}
	_, err = cliCube(t, ctx, map[string]string{"CUBE_TOKEN": testToken}, "ls", "-w", addr, "--ca", filepath.Join(dir, "ca.pem"))
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the worker at "+addr+": ") {
		t.Errorf("cube ls without a client certificate: got %v, want the worker out of reach", err)
	}
}

// cube logs -f whose answer the worker cuts short (it shuts down while the task runs on) fails
// and says so, rather than ending as if the task had ended.
func TestCLILogsCutShort(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	tk := echoTask("--print", "tick", "--lines", "0", "--interval", "100ms")
	d.running(t, tk, 30*time.Second)
	out := &signalWriter{first: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		env := map[string]string{"CUBE_WORKER": strings.TrimPrefix(d.url, "http://")}
		done <- run(ctx, []string{"logs", "-f", tk.ID.String()}, func(k string) string { return env[k] }, out, io.Discard)
	}()
	select {
	case <-out.first: // the CLI follows the logs: the worker goes away
	case err := <-done:
		t.Fatalf("cube logs -f ended before printing anything: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("cube logs -f printed nothing within 30s")
	}
	d.stop(t)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cut short") {
			t.Errorf("cube logs -f: got %v after %q; want an error saying the logs were cut short", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cube logs -f did not end within 30s of the worker's shutdown")
	}
}

// signalWriter keeps what is written to it and closes first at the first write.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.buf.Write(p)
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
