package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// Task states as the API serializes them.
const (
	statePending = iota
	stateScheduled
	stateRunning
	stateCompleted
	stateFailed
)

// requestTimeout bounds one request to the worker.
const requestTimeout = 10 * time.Second

// workerProc is a `cube worker` subprocess and a client of its API.
type workerProc struct {
	name    string
	bin     string
	args    []string // the flags but --port
	logPath string
	url     string
	cmd     *exec.Cmd
	logf    *os.File
	dataDir string        // the worker's --data-dir, removed when it has stopped; "" with --in-memory
	done    chan struct{} // closed when the process has exited; exitErr says how
	http    *http.Client
	once    sync.Once
	stopErr error

	exitErr error
}

// startWorker runs `cube worker` on 127.0.0.1 with a free port and the given name, and waits
// until it answers /readyz. Its state is on disk in a temporary data dir, as a worker keeps it by
// default, or with inMemory in memory. extra are more flags for the worker.
func startWorker(ctx context.Context, bin, name string, concurrency int, logPath string, inMemory bool, extra ...string) (*workerProc, error) {
	args := []string{"worker", "--host", "127.0.0.1", "--name", name, "--concurrency", strconv.Itoa(concurrency)}
	args = append(args, extra...)
	dataDir := ""
	if inMemory {
		args = append(args, "--in-memory")
	} else {
		var err error
		if dataDir, err = os.MkdirTemp("", "cube-bench-state-"); err != nil {
			return nil, err
		}
		args = append(args, "--data-dir", dataDir)
	}
	_ = os.Remove(logPath) // a new log per run; a restart appends to it
	w, err := launchWorker(ctx, bin, name, args, dataDir, logPath)
	if err != nil && dataDir != "" {
		os.RemoveAll(dataDir)
	}
	return w, err
}

// restart starts the worker again, after kill9, with the same flags, name and data dir (on a new
// port), appending to its log, and waits until it answers /readyz.
func (w *workerProc) restart(ctx context.Context) (*workerProc, error) {
	return launchWorker(ctx, w.bin, w.name, w.args, w.dataDir, w.logPath)
}

// kill9 kills the worker with SIGKILL, as a crash would, and waits for it to exit. Its data dir
// is kept for restart; stop does nothing after it.
func (w *workerProc) kill9() {
	w.once.Do(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		w.logf.Close()
		w.http.CloseIdleConnections()
		w.stopErr = nil
	})
}

// launchWorker starts bin with args and --port set to a free port, and waits until it answers
// /readyz. The process owns dataDir: stop removes it.
func launchWorker(ctx context.Context, bin, name string, args []string, dataDir, logPath string) (*workerProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("the cube binary: %w (build it with make build)", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	base := args
	args = append(slices.Clone(args), "--port", strconv.Itoa(port))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C at the terminal reaches cube-bench alone, which
	// then stops the worker in order; and SIGTERM should cube-bench die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	w := &workerProc{
		name:    name,
		bin:     bin,
		args:    base,
		logPath: logPath,
		dataDir: dataDir,
		url:     "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		cmd:     cmd,
		logf:    logf,
		done:    make(chan struct{}),
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	go func() {
		w.exitErr = cmd.Wait()
		close(w.done)
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := w.do(rctx, http.MethodGet, "/readyz", nil, http.StatusOK, nil)
		cancel()
		if err == nil {
			return w, nil
		}
		select {
		case <-w.done:
			return nil, fmt.Errorf("cube worker exited at start: %v; its log: %s", w.exitErr, logPath)
		case <-ctx.Done():
			w.stopKeep()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			w.stopKeep()
			return nil, fmt.Errorf("cube worker not ready within 20s: %v; its log: %s", err, logPath)
		}
	}
}

// stopKeep stops the worker as stop does, but keeps its data dir (for its caller to remove).
func (w *workerProc) stopKeep() {
	dir := w.dataDir
	w.dataDir = ""
	w.stop()
	w.dataDir = dir
}

// stop sends the worker SIGTERM, waits for it to exit (killing it after 30 s) and returns how it
// exited. It is safe to call more than once.
func (w *workerProc) stop() error {
	w.once.Do(func() {
		defer w.logf.Close()
		defer w.http.CloseIdleConnections()
		if w.dataDir != "" {
			defer os.RemoveAll(w.dataDir)
		}
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
			w.stopErr = w.exitErr
		case <-time.After(30 * time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
			w.stopErr = errors.New("cube worker did not exit within 30s of SIGTERM; killed")
		}
	})
	return w.stopErr
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// taskView is the part of the API's task the benchmarks read.
type taskView struct {
	ID          string
	ContainerID string
	State       int
	Error       string
}

// taskSpec is what a benchmark asks the worker to run.
type taskSpec struct {
	Name         string              `json:",omitempty"`
	Image        string              `json:",omitempty"`
	ExposedPorts map[string]struct{} `json:",omitempty"`
	Cmd          []string            `json:",omitempty"`
	PullPolicy   string              `json:",omitempty"`
}

// eventBody returns a POST /tasks body that starts a new task with the spec, its name (if any)
// made its own with the start of its ID, and the task's ID.
func eventBody(spec taskSpec) ([]byte, string) {
	id := uuid.NewString()
	if spec.Name != "" {
		spec.Name += "-" + id[:8] // names of tasks that have not ended are unique
	}
	type taskBody struct {
		ID    string
		State int
		taskSpec
	}
	body, err := json.Marshal(struct {
		ID        string
		State     int
		Timestamp string
		Task      taskBody
	}{uuid.NewString(), stateScheduled, "", taskBody{id, stateScheduled, spec}})
	if err != nil {
		panic(err) // the types above always encode
	}
	return body, id
}

// do sends one request and decodes the answer into out when out is not nil. An answer with
// another status than want is an error that quotes the body.
func (w *workerProc) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.url+path, r)
	if err != nil {
		return err
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: got %d, want %d: %s", method, path, resp.StatusCode, want, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// submit starts a new task with the spec and returns its ID.
func (w *workerProc) submit(ctx context.Context, spec taskSpec) (string, error) {
	body, id := eventBody(spec)
	return id, w.do(ctx, http.MethodPost, "/tasks", body, http.StatusCreated, nil)
}

func (w *workerProc) get(ctx context.Context, id string) (taskView, error) {
	var t taskView
	err := w.do(ctx, http.MethodGet, "/tasks/"+id, nil, http.StatusOK, &t)
	return t, err
}

func (w *workerProc) list(ctx context.Context) ([]taskView, error) {
	var ts []taskView
	err := w.do(ctx, http.MethodGet, "/tasks", nil, http.StatusOK, &ts)
	return ts, err
}

// listBytes returns the size of GET /tasks's answer.
func (w *workerProc) listBytes(ctx context.Context) (int, error) {
	var raw json.RawMessage
	err := w.do(ctx, http.MethodGet, "/tasks", nil, http.StatusOK, &raw)
	return len(raw), err
}

func (w *workerProc) delete(ctx context.Context, id string) error {
	return w.do(ctx, http.MethodDelete, "/tasks/"+id, nil, http.StatusNoContent, nil)
}

// slowPoll is how often waitState polls before its gate opens: enough to notice a task that
// fails early, little enough not to slow the Engine down.
const slowPoll = 50 * time.Millisecond

// waitState polls GET /tasks/{id} until the task's state is want, and returns the task and the
// moment the answer that showed it arrived. It polls every interval once gate is closed (at
// once when gate is nil) and every slowPoll before. A task that ends Failed when want is not
// Failed is an error.
func (w *workerProc) waitState(ctx context.Context, id string, want int, gate <-chan struct{}, interval, timeout time.Duration) (taskView, time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		t, err := w.get(ctx, id)
		seen := time.Now()
		if err != nil {
			return t, seen, err
		}
		if t.State == want {
			return t, seen, nil
		}
		if t.State == stateFailed || (t.State == stateCompleted && want != stateCompleted) {
			return t, seen, fmt.Errorf("task %s ended in state %d: %s", id, t.State, t.Error)
		}
		if seen.After(deadline) {
			return t, seen, fmt.Errorf("task %s still in state %d after %v", id, t.State, timeout)
		}
		wait := interval
		if gate != nil {
			select {
			case <-gate:
				gate = nil // open: every interval from now on
			default:
				wait = slowPoll
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return t, seen, ctx.Err()
		case <-gate: // a nil gate never fires
			timer.Stop()
			gate = nil
		case <-timer.C:
		}
	}
}

// procMem is a process's memory as /proc/PID/status has it, in bytes: the resident set, its peak,
// and the resident set's two parts, anonymous (the heap, the stacks) and file-backed (the
// binary's pages and the database's map).
type procMem struct {
	RSS, HWM, Anon, File int64
}

// procStatus reads pid's memory from /proc/PID/status.
func procStatus(pid int) (procMem, error) {
	var m procMem
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("/proc/%d/status: %s: unexpected %q", pid, k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, err
		}
		*dst = n << 10
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux architecture
// Go supports.
const clockTicks = 100

// procCPU returns the CPU time the worker has used, user plus system (utime+stime).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, state; utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procExecTime returns the CPU time the worker's threads have used, to the nanosecond: the sum
// of se.sum_exec_runtime (in ms) over /proc/PID/task/*/sched, which kernels built with
// CONFIG_SCHED_DEBUG have. Threads that exited are not counted.
func procExecTime(pid int) (time.Duration, error) {
	paths, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/sched", pid))
	if err != nil || len(paths) == 0 {
		return 0, fmt.Errorf("no /proc/%d/task/*/sched", pid)
	}
	var sum time.Duration
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		found := false
		for line := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(k) != "se.sum_exec_runtime" {
				continue
			}
			ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", p, err)
			}
			sum += time.Duration(ms * float64(time.Millisecond))
			found = true
			break
		}
		if !found {
			return 0, fmt.Errorf("%s: no se.sum_exec_runtime", p)
		}
	}
	return sum, nil
}

// sleepCtx waits for d, or returns ctx's error when it is done first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
