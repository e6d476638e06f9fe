package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"100", 100},
		{"100b", 100},
		{"512k", 512 << 10},
		{"512KB", 512 << 10},
		{"64m", 64 << 20},
		{"64M", 64 << 20},
		{"64MiB", 64 << 20},
		{" 2g ", 2 << 30},
		{"1GiB", 1 << 30},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "m", "-1", "1.5m", "12x", "ten", "99999999999999999999g", "8589934592g"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.listen != ":7777" || c.printSet || c.sleep != 0 {
		t.Errorf("no args: got %+v, want --listen :7777 only", c)
	}

	c, err = parseFlags([]string{
		"--listen", ":8080", "--tcp", ":9090", "--print", "hi", "--lines", "3",
		"--stderr", "err", "--interval", "100ms", "--sleep", "2s", "--exit", "7",
		"--alloc", "64m", "--unhealthy-after", "1m", "--check", "http://x/health",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		listen: ":8080", tcp: ":9090", print: "hi", printSet: true, lines: 3,
		stderr: "err", interval: 100 * time.Millisecond, sleep: 2 * time.Second,
		exitCode: 7, alloc: 64 << 20, unhealthyAfter: time.Minute, check: "http://x/health",
	}
	if *c != want {
		t.Errorf("got %+v\nwant %+v", *c, want)
	}

	c, err = parseFlags([]string{"--exit", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.listen != "" || c.lines != 1 || c.printSet || c.exitCode != 3 {
		t.Errorf("--exit 3: got %+v", c)
	}

	c, err = parseFlags([]string{"--print", ""}, io.Discard)
	if err != nil || !c.printSet {
		t.Errorf(`--print "": got %+v, %v; want printSet`, c, err)
	}

	for _, args := range [][]string{
		{"--nope"},
		{"extra"},
		{"--print", "x", "positional"},
		{"--lines", "-1"},
		{"--print", "x", "--lines", "0"},
		{"--exit", "256"},
		{"--exit", "-1"},
		{"--alloc", "lots"},
		{"--oom", "lots"},
		{"--sleep", "-1s"},
		{"--sleep", "5"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): want an error", args)
		}
	}
}

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(newHandler("myhost", 0))
	defer srv.Close()

	for _, tc := range []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/", 200, "hello from myhost\n"},
		{"/any/other/path", 200, "hello from myhost\n"},
		{"/health", 200, "ok"},
		{"/echo?msg=hello%20world", 200, "hello world"},
		{"/echo?msg=", 200, ""},
		{"/status/200", 200, "OK"},
		{"/status/404", 404, "Not Found"},
		{"/status/503", 503, "Service Unavailable"},
		{"/status/abc", 400, ""},
		{"/status/99", 400, ""},
		{"/status/600", 400, ""},
	} {
		code, body := get(t, srv, tc.path)
		if code != tc.wantCode || (tc.wantCode != 400 && body != tc.wantBody) {
			t.Errorf("GET %s = %d %q; want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
		}
	}

	resp, err := srv.Client().Post(srv.URL+"/echo", "text/plain", strings.NewReader("posted"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "posted" {
		t.Errorf("POST /echo = %d %q; want 200 %q", resp.StatusCode, b, "posted")
	}
}

func TestHandlerUnhealthyAfter(t *testing.T) {
	h := newHandler("h", time.Minute)
	var mu sync.Mutex
	now := h.start
	h.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv := httptest.NewServer(h)
	defer srv.Close()

	if code, body := get(t, srv, "/health"); code != 200 || body != "ok" {
		t.Errorf("before: /health = %d %q; want 200 ok", code, body)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if code, body := get(t, srv, "/health"); code != 500 || body != "unhealthy" {
		t.Errorf("after: /health = %d %q; want 500 unhealthy", code, body)
	}
	if code, _ := get(t, srv, "/"); code != 200 {
		t.Errorf("after: / = %d; want 200", code)
	}
}

// runEcho runs the program in-process and returns exit code, stdout and stderr.
func runEcho(t *testing.T, sig <-chan os.Signal, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr, sig)
	return code, stdout.String(), stderr.String()
}

func TestRunPrint(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{[]string{"--print", "hello"}, 0, "hello\n", ""},
		{[]string{"--print", "hello", "--exit", "3"}, 3, "hello\n", ""},
		{[]string{"--print", "x", "--lines", "3"}, 0, "x 1\nx 2\nx 3\n", ""},
		{[]string{"--print", "x", "--lines", "3", "--interval", "10ms"}, 0, "x 1\nx 2\nx 3\n", ""},
		{[]string{"--stderr", "oops", "--exit", "1"}, 1, "", "oops\n"},
		{[]string{"--exit", "4"}, 4, "", ""},
		{[]string{"--bogus"}, 2, "", ""},
	} {
		code, stdout, stderr := runEcho(t, nil, tc.args...)
		if code != tc.wantCode || stdout != tc.wantStdout || (tc.wantCode != 2 && stderr != tc.wantStderr) {
			t.Errorf("run(%q) = %d, %q, %q; want %d, %q, %q",
				tc.args, code, stdout, stderr, tc.wantCode, tc.wantStdout, tc.wantStderr)
		}
	}
}

func TestRunSleep(t *testing.T) {
	start := time.Now()
	code, stdout, _ := runEcho(t, nil, "--print", "a", "--sleep", "100ms", "--exit", "5")
	if code != 5 || stdout != "a\n" {
		t.Errorf("got %d %q; want 5 %q", code, stdout, "a\n")
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("returned after %v, before --sleep elapsed", d)
	}
}

// notifyWriter is a concurrency-safe buffer that closes wrote on the first write.
type notifyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
	once  sync.Once
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.once.Do(func() { close(w.wrote) })
	return w.buf.Write(p)
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestRunSignal(t *testing.T) {
	sig := make(chan os.Signal, 1)
	done := make(chan int, 1)
	stdout := &notifyWriter{wrote: make(chan struct{})}
	var stderr bytes.Buffer
	go func() {
		done <- run([]string{"--listen", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--print", "tick",
			"--lines", "0", "--interval", "5ms", "--exit", "9"}, stdout, &stderr, sig)
	}()
	select {
	case <-stdout.wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing printed")
	}
	sig <- syscall.SIGTERM
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0 (stderr %q)", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	if got := stdout.String(); !strings.HasPrefix(got, "tick 1\n") {
		t.Errorf("stdout = %q, want numbered tick lines", got)
	}
}

func TestRunServes(t *testing.T) {
	// Pick free ports, then let run listen on them.
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	httpAddr, tcpAddr := freePort(), freePort()
	sig := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--listen", httpAddr, "--tcp", tcpAddr}, io.Discard, io.Discard, sig)
	}()
	defer func() {
		sig <- syscall.SIGINT
		if code := <-done; code != 0 {
			t.Errorf("exit code after SIGINT = %d, want 0", code)
		}
	}()

	deadline := time.Now().Add(5 * time.Second)
	var (
		resp *http.Response
		err  error
	)
	for {
		resp, err = http.Get("http://" + httpAddr + "/health")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("/health = %d %q", resp.StatusCode, b)
	}
	conn, err := net.DialTimeout("tcp", tcpAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial --tcp: %v", err)
	}
	conn.Close()
}

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if code, _, stderr := runEcho(t, nil, "--listen", ln.Addr().String()); code != 1 || stderr == "" {
		t.Errorf("listen on a busy port: got %d %q; want 1 and a message", code, stderr)
	}
}

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(newHandler("h", 0))
	defer srv.Close()
	for _, tc := range []struct {
		url  string
		want int
	}{
		{srv.URL + "/health", 0},
		{srv.URL + "/status/204", 0},
		{srv.URL + "/status/500", 1},
		{srv.URL + "/status/301", 1},
		{"http://127.0.0.1:1/", 1},
	} {
		if code, _, _ := runEcho(t, nil, "--check", tc.url); code != tc.want {
			t.Errorf("--check %s = %d, want %d", tc.url, code, tc.want)
		}
	}
}

func TestAllocate(t *testing.T) {
	b := allocate(1<<20 + 3)
	if len(b) != 1<<20+3 || b[0] != 1 || b[4096] != 1 || b[len(b)-1] != 1 {
		t.Error("allocate did not allocate and touch the memory")
	}
}

func TestSpinKeepsACoreBusy(t *testing.T) {
	// A spin burns CPU time, a sleep does not: spin until the process has used a good slice of
	// CPU. On a loaded machine that takes longer, never forever; a spin that slept never gets
	// there. No ratio to the wall clock, which other processes decide.
	const want = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	before := cpuTime(t)
	rounds := make(chan uint64, 1)
	go func() { rounds <- spin(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for cpuTime(t)-before < want {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("spin used %v of CPU in a minute; want %v: it does not keep a core busy", cpuTime(t)-before, want)
		}
		time.Sleep(20 * time.Millisecond) // this loop's own CPU stays far below want

	}
	cancel()
	if n := <-rounds; n == 0 {
		t.Fatal("spin made no rounds")
	}
}

func TestRunBusyKeepsRunning(t *testing.T) {
	start := time.Now()
	code, _, _ := runEcho(t, nil, "--busy", "--sleep", "200ms", "--exit", "6")
	if code != 6 {
		t.Errorf("--busy --sleep 200ms --exit 6: got exit code %d, want 6", code)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("--busy returned after %v, before --sleep elapsed", d)
	}
	c, err := parseFlags([]string{"--busy"}, io.Discard)
	if err != nil || !c.busy {
		t.Errorf("parseFlags(--busy): got %+v, %v; want busy", c, err)
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestRunSymlinkAndLs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/b", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runEcho(t, nil, "--symlink", "/etc:"+dir+"/a", "--ls", dir, "--print", "done")
	if code != 0 || stdout != "a\nb\ndone\n" || stderr != "" {
		t.Errorf("run: got %d, %q, %q; want 0, the names a and b, then done", code, stdout, stderr)
	}
	if target, err := os.Readlink(dir + "/a"); err != nil || target != "/etc" {
		t.Errorf("the link: got %q, %v; want /etc", target, err)
	}
	if code, _, stderr := runEcho(t, nil, "--ls", dir+"/missing"); code != 1 || !strings.HasPrefix(stderr, "ls: ") {
		t.Errorf("ls of a missing directory: got %d, %q; want 1 and an ls: error", code, stderr)
	}
	if code, _, _ := runEcho(t, nil, "--symlink", "/etc:"+dir+"/a"); code != 1 {
		t.Errorf("a link that exists already: got %d, want 1", code)
	}
}

// With --print-env and --log-requests, as the image runs by default, the program prints its
// environment at start and a line for each request, and / greets with $GREETING.
func TestRunPrintsEnvAndLogsRequests(t *testing.T) {
	t.Setenv("GREETING", "hi")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	out := &syncBuffer{}
	sig := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() { done <- run([]string{"--listen", addr, "--print-env", "--log-requests"}, out, io.Discard, sig) }()
	defer func() {
		sig <- syscall.SIGINT
		<-done
	}()
	deadline := time.Now().Add(5 * time.Second)
	var body string
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasPrefix(body, "hi from ") {
		t.Errorf("GET / with GREETING=hi: got %q, want it to start with \"hi from \"", body)
	}
	http.Get("http://" + addr + "/status/404")
	for !strings.Contains(out.String(), "GET /status/404 404\n") {
		if time.Now().After(deadline) {
			t.Fatalf("stdout: got %q, want a line for each request", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := out.String(); !strings.Contains(s, "GREETING=hi\n") || !strings.Contains(s, "GET / 200\n") {
		t.Errorf("stdout: got %q, want GREETING=hi and GET / 200", s)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
