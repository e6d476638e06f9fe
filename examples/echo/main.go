// Command echo is the small, static test workload used throughout cube's
// tests and README examples. It is packaged into the cube-echo:latest image
// (FROM scratch, ENTRYPOINT ["/echo"], CMD ["--listen", ":7777", "--print-env", "--log-requests"]).
//
// Its behaviour is chosen by flags:
//
//	--listen ADDR          serve HTTP on ADDR (e.g. ":7777"):
//	                         /              200 "hello from HOSTNAME\n" (any other path too);
//	                                        with GREETING=hi in the environment, "hi from HOSTNAME\n"
//	                         /health        200 "ok" (500 "unhealthy" once --unhealthy-after has elapsed)
//	                         /echo?msg=X    200 "X" (without msg: the request body)
//	                         /status/CODE   answers with status CODE (200-599)
//	--unhealthy-after DUR  /health answers 500 once DUR has passed since start
//	--tcp ADDR             accept raw TCP connections on ADDR and close them at once
//	--print TEXT           print TEXT to stdout, --lines times
//	--lines N              number of lines to print (default 1); when N != 1 each
//	                       line gets its number appended ("TEXT 1", "TEXT 2", ...);
//	                       0 means without end and needs --interval
//	--interval DUR         print one line per DUR (first one at once) instead of all at once
//	--stderr TEXT          print TEXT as one line to stderr (at start)
//	--sleep DUR            exit after DUR (counted from start), even when serving
//	--exit N               exit code when the program ends by itself (default 0)
//	--alloc SIZE           allocate and touch SIZE bytes ("512k", "64m", "1g"), keep running
//	--busy                 keep one CPU core busy (a spinning loop), keep running
//	--oom SIZE             after a second, run a child that allocates SIZE (--alloc); when it
//	                       dies of a signal (the OOM killer, in a container whose memory limit
//	                       is below SIZE), wait a second and exit with 128+signal. The pauses
//	                       let the Engine see the OOM kill: one within moments of the start,
//	                       or of a container whose PID 1 dies at once, is sometimes lost.
//	--print-env            print the environment at start, one KEY=VALUE a line, sorted
//	--log-requests         print a line to stdout for each HTTP request: "GET /health 200"
//	--check URL            only GET URL and exit 0 on a 2xx answer, 1 otherwise
//	                       (for HEALTHCHECK / exec health checks in a shell-less image)
//	--symlink TARGET:LINK  make the symbolic link LINK pointing to TARGET (at start)
//	--ls DIR               print the names in DIR, one a line, sorted (at start, after
//	                       --symlink); "ls: ERROR" on stderr and exit 1 when DIR cannot be read
//
// Without --listen, --tcp, --alloc, --busy and --sleep it exits as soon as the printing
// is done. With no flags at all it behaves like "--listen :7777".
// SIGTERM and SIGINT always make it exit promptly with code 0 (it runs as PID 1
// in its container, where the default signal actions do not apply).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultListen is used when the program is started without any argument.
const defaultListen = ":7777"

// config is the parsed command line.
type config struct {
	listen         string
	tcp            string
	print          string
	printSet       bool
	lines          int
	stderr         string
	interval       time.Duration
	sleep          time.Duration
	exitCode       int
	alloc          int64
	oom            string
	busy           bool
	check          string
	unhealthyAfter time.Duration
	symlink        string
	ls             string
	printEnv       bool
	logRequests    bool
}

// errUsage marks command line errors (exit code 2).
var errUsage = errors.New("usage error")

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	if len(args) == 0 {
		return &config{listen: defaultListen, lines: 1}, nil
	}
	var (
		c     config
		alloc string
	)
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "", "serve HTTP on `ADDR` (e.g. :7777)")
	fs.StringVar(&c.tcp, "tcp", "", "accept (and close) raw TCP connections on `ADDR`")
	fs.StringVar(&c.print, "print", "", "print `TEXT` to stdout")
	fs.IntVar(&c.lines, "lines", 1, "number of lines to print with --print (0: without end, needs --interval)")
	fs.StringVar(&c.stderr, "stderr", "", "print `TEXT` as one line to stderr")
	fs.DurationVar(&c.interval, "interval", 0, "print one line per `DUR` instead of all at once")
	fs.DurationVar(&c.sleep, "sleep", 0, "exit after `DUR` (counted from start)")
	fs.IntVar(&c.exitCode, "exit", 0, "exit `CODE` when the program ends by itself")
	fs.StringVar(&alloc, "alloc", "", "allocate and touch `SIZE` bytes of memory (e.g. 64m), then keep running")
	fs.StringVar(&c.oom, "oom", "", "run a child that allocates `SIZE`; exit 128+signal a second after it is killed")
	fs.BoolVar(&c.busy, "busy", false, "keep one CPU core busy until the program ends")
	fs.StringVar(&c.check, "check", "", "GET `URL` and exit 0 on 2xx, 1 otherwise")
	fs.DurationVar(&c.unhealthyAfter, "unhealthy-after", 0, "/health answers 500 once `DUR` has passed")
	fs.StringVar(&c.symlink, "symlink", "", "make the symbolic link LINK pointing to TARGET, given as `TARGET:LINK`")
	fs.StringVar(&c.ls, "ls", "", "print the names in `DIR`, one a line")
	fs.BoolVar(&c.printEnv, "print-env", false, "print the environment at start, one KEY=VALUE a line")
	fs.BoolVar(&c.logRequests, "log-requests", false, "print a line for each HTTP request")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "print" {
			c.printSet = true
		}
	})
	if c.oom != "" {
		if _, err := parseSize(c.oom); err != nil {
			return nil, fmt.Errorf("%w: --oom: %v", errUsage, err)
		}
	}
	if alloc != "" {
		n, err := parseSize(alloc)
		if err != nil {
			return nil, fmt.Errorf("%w: --alloc: %v", errUsage, err)
		}
		c.alloc = n
	}
	switch {
	case c.lines < 0:
		return nil, fmt.Errorf("%w: --lines must not be negative", errUsage)
	case c.lines == 0 && c.printSet && c.interval <= 0:
		return nil, fmt.Errorf("%w: --lines 0 (without end) needs --interval", errUsage)
	case c.interval < 0 || c.sleep < 0 || c.unhealthyAfter < 0:
		return nil, fmt.Errorf("%w: durations must not be negative", errUsage)
	case c.exitCode < 0 || c.exitCode > 255:
		return nil, fmt.Errorf("%w: --exit must be within 0-255", errUsage)
	}
	return &c, nil
}

// parseSize parses a byte size such as "100", "512k", "64m", "64MiB", "1g"
// (case-insensitive; k, m and g are powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
		{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
		{"b", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return n * mult, nil
}

// handler serves the HTTP endpoints.
type handler struct {
	mux            *http.ServeMux
	hostname       string
	greeting       string // what / says hello with: $GREETING, or "hello"
	start          time.Time
	unhealthyAfter time.Duration
	now            func() time.Time
}

func newHandler(hostname string, unhealthyAfter time.Duration) *handler {
	h := &handler{
		mux:            http.NewServeMux(),
		hostname:       hostname,
		greeting:       "hello",
		start:          time.Now(),
		unhealthyAfter: unhealthyAfter,
		now:            time.Now,
	}
	h.mux.HandleFunc("/health", h.health)
	h.mux.HandleFunc("/echo", h.echo)
	h.mux.HandleFunc("/status/{code}", h.status)
	h.mux.HandleFunc("/", h.root)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *handler) root(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s from %s\n", h.greeting, h.hostname)
}

func (h *handler) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.unhealthyAfter > 0 && h.now().Sub(h.start) >= h.unhealthyAfter {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "unhealthy")
		return
	}
	io.WriteString(w, "ok")
}

func (h *handler) echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if msg, ok := r.URL.Query()["msg"]; ok {
		io.WriteString(w, strings.Join(msg, "\n"))
		return
	}
	io.Copy(w, io.LimitReader(r.Body, 1<<20))
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "invalid status code %q (want 200-599)", r.PathValue("code"))
		return
	}
	w.WriteHeader(code)
	io.WriteString(w, http.StatusText(code))
}

// check GETs url and reports whether the answer was 2xx.
func check(url string, stderr io.Writer) int {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "echo: check: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "echo: check: %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}

// oomChild waits a second, then runs this program again with --alloc size and waits for it. A
// child killed by a signal makes it wait a second, then return 128+signal, the exit code of a
// program killed so.
func oomChild(size string, stdout, stderr io.Writer) int {
	time.Sleep(time.Second)
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "echo: --oom: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, "--alloc", size)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		fmt.Fprintf(stderr, "echo: --oom: the child ended: %v\n", err)
		return 1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		fmt.Fprintf(stderr, "echo: --oom: the child was killed by %v\n", ws.Signal())
		time.Sleep(time.Second)
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// ballast keeps the --alloc memory reachable for the life of the process.
var ballast []byte

// allocate allocates n bytes and writes to every page so that they are
// really resident (and count against a container memory limit).
func allocate(n int64) []byte {
	b := make([]byte, n)
	for i := int64(0); i < n; i += 4096 {
		b[i] = 1
	}
	if n > 0 {
		b[n-1] = 1
	}
	return b
}

// spin keeps one CPU core busy until ctx is done, and returns how many rounds it made.
func spin(ctx context.Context) uint64 {
	var n uint64
	for {
		select {
		case <-ctx.Done():
			return n
		default:
			n++
		}
	}
}

// printLines prints the --print lines, one per interval if set; it stops
// early when ctx is done.
func printLines(ctx context.Context, c *config, stdout io.Writer) {
	if !c.printSet {
		return
	}
	var tick <-chan time.Time
	if c.interval > 0 {
		t := time.NewTicker(c.interval)
		defer t.Stop()
		tick = t.C
	}
	for i := 1; c.lines == 0 || i <= c.lines; i++ {
		if i > 1 && tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
		if ctx.Err() != nil {
			return
		}
		if c.lines == 1 {
			fmt.Fprintln(stdout, c.print)
		} else {
			fmt.Fprintf(stdout, "%s %d\n", c.print, i)
		}
	}
}

// run is the whole program; it returns the exit code. Receiving from sig
// (SIGTERM/SIGINT in main) makes it return 0.
func run(args []string, stdout, stderr io.Writer, sig <-chan os.Signal) int {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "echo: %v\n", err)
		}
		return 2
	}
	if c.check != "" {
		return check(c.check, stderr)
	}
	if c.oom != "" {
		return oomChild(c.oom, stdout, stderr)
	}
	if c.symlink != "" {
		target, link, _ := strings.Cut(c.symlink, ":")
		if err := os.Symlink(target, link); err != nil {
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 1
		}
	}
	if c.ls != "" {
		entries, err := os.ReadDir(c.ls)
		if err != nil {
			fmt.Fprintf(stderr, "ls: %v\n", err)
			return 1
		}
		for _, e := range entries {
			fmt.Fprintln(stdout, e.Name())
		}
	}

	// The environment first, before anything is served: a client sees it all in the output
	// before the first request's line.
	if c.printEnv {
		env := os.Environ()
		slices.Sort(env)
		for _, kv := range env {
			fmt.Fprintln(stdout, kv)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel and the listeners are closed
	defer cancel()

	var sleep <-chan time.Time
	if c.sleep > 0 {
		t := time.NewTimer(c.sleep)
		defer t.Stop()
		sleep = t.C
	}

	if c.alloc > 0 {
		ballast = allocate(c.alloc)
	}
	if c.busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spin(ctx)
		}()
	}

	serveErr := make(chan error, 2)
	if c.listen != "" {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 1
		}
		hostname, _ := os.Hostname()
		h := newHandler(hostname, c.unhealthyAfter)
		if g := os.Getenv("GREETING"); g != "" {
			h.greeting = g
		}
		var handler http.Handler = h
		if c.logRequests {
			handler = logRequests(h, stdout)
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
		}
		defer srv.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	if c.tcp != "" {
		ln, err := net.Listen("tcp", c.tcp)
		if err != nil {
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 1
		}
		defer ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				conn, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						serveErr <- err
					}
					return
				}
				conn.Close()
			}
		}()
	}

	if c.stderr != "" {
		fmt.Fprintln(stderr, c.stderr)
	}
	printed := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(printed)
		printLines(ctx, c, stdout)
	}()

	keepRunning := c.listen != "" || c.tcp != "" || c.alloc > 0 || c.busy || c.sleep > 0
	for {
		select {
		case <-sig:
			return 0
		case <-sleep:
			return c.exitCode
		case err := <-serveErr:
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 1
		case <-printed:
			if !keepRunning {
				return c.exitCode
			}
			printed = nil
		}
	}
}

// logRequests prints a line to w for each request h answers: method, path and status.
func logRequests(h http.Handler, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s %d\n", r.Method, r.URL.RequestURI(), sw.status)
	})
}

// statusWriter remembers the status an answer was written with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sig))
}
