package docker_test

import (
	"context"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
)

// readLogs reads the whole output Logs returns.
func readLogs(t *testing.T, rt *docker.Runtime, id string, opts task.LogOptions) string {
	t.Helper()
	rc, err := rt.Logs(ctx(t), id, opts)
	if err != nil {
		t.Fatalf("Logs(%+v): %v", opts, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Logs(%+v): read: %v", opts, err)
	}
	return string(b)
}

func TestLogsDemultiplexTailSinceTimestamps(t *testing.T) {
	rt, _ := newRuntime(t)
	// The lines come 100ms apart: the Engine reads stdout and stderr apart, and lines printed at
	// once to both may come in either order.
	c, err := rt.Start(ctx(t), echoTask("--print", "hello", "--lines", "3", "--interval", "100ms", "--stderr", "oops"), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitEnded(t, rt, c.ID)

	lines := strings.Split(strings.TrimSuffix(readLogs(t, rt, c.ID, task.LogOptions{}), "\n"), "\n")
	slices.Sort(lines)
	if want := []string{"hello 1", "hello 2", "hello 3", "oops"}; !slices.Equal(lines, want) {
		t.Errorf("all output: got %q, want %q (stdout and stderr, as lines)", lines, want)
	}
	if got := readLogs(t, rt, c.ID, task.LogOptions{Tail: 1}); got != "hello 3\n" {
		t.Errorf("tail 1: got %q, want %q", got, "hello 3\n")
	}
	if got := readLogs(t, rt, c.ID, task.LogOptions{Tail: -1}); got != "" {
		t.Errorf("tail 0: got %q, want nothing", got)
	}
	if got := readLogs(t, rt, c.ID, task.LogOptions{Since: time.Now().Add(time.Second)}); got != "" {
		t.Errorf("since later: got %q, want nothing", got)
	}
	if got := readLogs(t, rt, c.ID, task.LogOptions{Since: time.Now().Add(-time.Minute), Tail: 2}); got != "hello 2\nhello 3\n" {
		t.Errorf("since a minute ago, tail 2: got %q, want the last two lines", got)
	}
	for _, line := range strings.Split(strings.TrimSuffix(readLogs(t, rt, c.ID, task.LogOptions{Timestamps: true}), "\n"), "\n") {
		ts, text, ok := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil || time.Since(at) > time.Minute || !strings.Contains("hello 1 hello 2 hello 3 oops", text) {
			t.Errorf("timestamped line %q: want an RFC 3339 time, a space and the line", line)
		}
	}
}

func TestLogsFollowEndsWithTheContainer(t *testing.T) {
	rt, _ := newRuntime(t)
	c, err := rt.Start(ctx(t), echoTask("--print", "tick", "--lines", "4", "--interval", "200ms"), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := readLogs(t, rt, c.ID, task.LogOptions{Follow: true})
	if got != "tick 1\ntick 2\ntick 3\ntick 4\n" {
		t.Errorf("followed output: got %q, want four ticks", got)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("follow ended after %v, before the container printed its last line", d)
	}

	// Following a container that ended gives its output and ends at once.
	if got := readLogs(t, rt, c.ID, task.LogOptions{Follow: true, Tail: 1}); got != "tick 4\n" {
		t.Errorf("follow of an ended container, tail 1: got %q, want %q", got, "tick 4\n")
	}
}

func TestLogsFollowEndsWithTheContext(t *testing.T) {
	rt, _ := newRuntime(t)
	c, err := rt.Start(ctx(t), echoTask("--listen", ":7777"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	rc, err := rt.Logs(fctx, c.ID, task.LogOptions{Follow: true, Tail: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if len(b) != 0 || err == nil {
		t.Errorf("follow of a quiet container: got %q, %v; want nothing and the context's end", b, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("follow took %v to end after its context, want about 500ms", d)
	}
}

func TestStatsOfABusyContainer(t *testing.T) {
	rt, _ := newRuntime(t)
	tk := echoTask("--busy", "--alloc", "16m")
	tk.Memory = 64 << 20
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A spinning loop keeps one core busy, an idle container uses next to none; a loaded
	// machine gives the spin less than a core, and not always the same: sample (each sample
	// spans about a second) until it shows the spin, or the deadline passes.
	var s task.ContainerStats
	for deadline := time.Now().Add(30 * time.Second); ; {
		start := time.Now()
		s, err = rt.Stats(ctx(t), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("sample in %v: %+v", time.Since(start).Round(time.Millisecond), s)
		if s.CPUPercent >= 10 || time.Now().After(deadline) {
			break
		}
	}
	if s.ContainerID != c.ID || time.Since(s.Time) > time.Minute {
		t.Errorf("sample: got container %s at %v, want %s now", s.ContainerID, s.Time, c.ID)
	}
	if s.CPUPercent < 10 || s.CPUPercent > 150 {
		t.Errorf("CPUPercent: got %.1f, want about 100 (one core busy)", s.CPUPercent)
	}
	if s.MemoryUsage < 16<<20 || s.MemoryLimit != 64<<20 {
		t.Errorf("memory: got %d of %d bytes, want at least the 16 MiB allocated, of 64 MiB", s.MemoryUsage, s.MemoryLimit)
	}
	if s.PIDs < 1 {
		t.Errorf("PIDs: got %d, want at least 1", s.PIDs)
	}
}

func TestLogsAndStatsOfUnknownContainer(t *testing.T) {
	rt, _ := newRuntime(t)
	if _, err := rt.Logs(ctx(t), "no-such-container", task.LogOptions{}); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Logs: got %v, want ENOTFOUND", err)
	}
	if _, err := rt.Stats(ctx(t), "no-such-container"); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Stats: got %v, want ENOTFOUND", err)
	}
}

// bigOutput starts a container that prints lines lines of 100 bytes, waits until it ended, and
// returns it with the size of its output. Its runtime has the default timeouts.
func bigOutput(t *testing.T, lines int) (string, int, string) {
	t.Helper()
	rt, name := newRuntime(t)
	c, err := rt.Start(ctx(t), echoTask("--print", strings.Repeat("x", 99-len(" NNNNN")), "--lines", strconv.Itoa(lines)), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitEnded(t, rt, c.ID)
	return c.ID, len(readLogs(t, rt, c.ID, task.LogOptions{})), name
}

// A reader that takes a while to read what the Engine sent is no Engine gone silent: the output
// comes whole, however long the reader pauses.
func TestLogsSlowReaderIsNotEngineSilence(t *testing.T) {
	id, size, name := bigOutput(t, 20000)
	rt, _ := newRuntimeWith(t, docker.Options{Worker: name, CallTimeout: time.Second})
	rc, err := rt.Logs(ctx(t), id, task.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 64<<10)
	got := 0
	for i := 0; ; i++ {
		if i < 2 {
			time.Sleep(1500 * time.Millisecond) // a reader slower than the Engine's timeout, twice
		}
		n, err := rc.Read(buf)
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v, want the whole output", got, size, err)
		}
	}
	if got != size || size < 20000*90 {
		t.Errorf("read %d bytes, want all %d", got, size)
	}
}

// An Engine that stops sending in the middle of the output ends it with an EUNAVAILABLE error,
// never a clean end.
func TestLogsEngineSilenceIsAnError(t *testing.T) {
	id, size, name := bigOutput(t, 50000)
	rt, proxy := proxiedRuntime(t, name, time.Second)
	rc, err := rt.Logs(ctx(t), id, task.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	first := make([]byte, 1024)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	proxy.Set(faultproxy.Hang)
	rest, err := io.ReadAll(rc)
	if task.ErrorCode(err) != task.EUNAVAILABLE || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("after %d of %d bytes: got %v, want an EUNAVAILABLE error saying the Engine sent nothing", len(first)+len(rest), size, err)
	}
	if len(first)+len(rest) >= size {
		t.Errorf("read %d bytes of %d: the Engine's pause came too late to test", len(first)+len(rest), size)
	}
}
