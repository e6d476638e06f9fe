package faultproxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echo is an upstream the test owns: it writes back what it reads, and half-closes its side
// when the client half-closes its own.
type echo struct {
	path     string
	accepted atomic.Int64
	received atomic.Int64 // bytes read from all connections
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// startEcho serves an echo on a unix socket in a short temporary folder until the test ends.
func startEcho(tb testing.TB) *echo {
	tb.Helper()
	dir := shortTempDir(tb)
	e := &echo{path: filepath.Join(dir, "echo.sock")}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: e.path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*net.UnixConn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, countingReader{c, &e.received})
				c.CloseWrite()
				// Wait for the other side to close before closing ours.
				io.Copy(io.Discard, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return e
}

// shortTempDir returns a temporary folder with a path short enough for unix sockets, removed
// when the test ends (t.TempDir's paths carry the test's name and can overflow them).
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "fp-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func dial(tb testing.TB, path string) *net.UnixConn {
	tb.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		tb.Fatalf("dial %s: %v", path, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

func set(tb testing.TB, p *faultproxy.Proxy, m faultproxy.Mode) {
	tb.Helper()
	if err := p.Set(m); err != nil {
		tb.Fatalf("Set(%v): %v", m, err)
	}
	if got := p.Mode(); got != m {
		tb.Fatalf("Mode() after Set(%v) = %v", m, got)
	}
}

// expectEcho reads want from c within a few seconds.
func expectEcho(tb testing.TB, c net.Conn, want string) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		tb.Fatalf("reading echo of %q: %v", want, err)
	}
	if string(got) != want {
		tb.Fatalf("echo: got %q, want %q", got, want)
	}
}

func roundTrip(tb testing.TB, c net.Conn, msg string) {
	tb.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		tb.Fatalf("write %q: %v", msg, err)
	}
	expectEcho(tb, c, msg)
}

// expectStalled fails unless c delivers nothing for d.
func expectStalled(tb testing.TB, c net.Conn, d time.Duration) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		tb.Fatalf("read on a hung connection: got %d bytes, err %v; want a timeout", n, err)
	}
}

// expectClosed fails unless the peer closes c within a few seconds.
func expectClosed(tb testing.TB, c net.Conn) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("connection still open after 5 s: %v", err)
	}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("still not %s after 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPassCopiesBothWaysAndHalfCloses(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path})
	if p.Mode() != faultproxy.Pass {
		t.Fatalf("Mode() = %v, want pass", p.Mode())
	}
	if want := "unix://" + p.Socket(); p.DockerHost() != want {
		t.Fatalf("DockerHost() = %q, want %q", p.DockerHost(), want)
	}
	c := dial(t, p.Socket())

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c) // ends when the echo half-closes after our CloseWrite
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(payload))
	}
	c.Close()
	n := int64(len(payload))
	eventually(t, "counted and closed", func() bool {
		s := p.Stats()
		return s.BytesUp == n && s.BytesDown == n && s.Open == 0 && s.Accepted == 1 && s.Forwarded == 1
	})
}

func TestHangStallsOpenConnectionsAndHoldsNewOnes(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path})
	a := dial(t, p.Socket())
	roundTrip(t, a, "a1")

	set(t, p, faultproxy.Hang)
	io.WriteString(a, "a2")
	expectStalled(t, a, 200*time.Millisecond)
	b := dial(t, p.Socket()) // accepted, as by a stopped daemon's kernel
	io.WriteString(b, "b1")
	expectStalled(t, b, 200*time.Millisecond)
	if s := p.Stats(); s.Accepted != 2 || s.Forwarded != 1 || s.Open != 2 {
		t.Fatalf("stats in hang: got %+v, want 2 accepted, 1 forwarded, 2 open", s)
	}
	if got := e.accepted.Load(); got != 1 {
		t.Fatalf("upstream saw %d connections during the hang, want 1", got)
	}

	set(t, p, faultproxy.Pass)
	expectEcho(t, a, "a2")
	expectEcho(t, b, "b1")
	roundTrip(t, a, "a3")
	if got := e.accepted.Load(); got != 2 {
		t.Fatalf("upstream saw %d connections after the hang, want 2", got)
	}
}

func TestHangForwardsHeldConnectionsAfterTheirClientsLeft(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path, Mode: faultproxy.Hang})
	c := dial(t, p.Socket())
	io.WriteString(c, "late")
	c.Close()
	set(t, p, faultproxy.Pass)
	// As a daemon continued after SIGSTOP reads what waited in its backlog.
	eventually(t, "forwarded", func() bool { return e.received.Load() == 4 })
	eventually(t, "closed", func() bool { return p.Stats().Open == 0 })
}

func TestDownClosesAndRefusesThenPassListensAgain(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path})
	a := dial(t, p.Socket())
	roundTrip(t, a, "a1")

	set(t, p, faultproxy.Down)
	expectClosed(t, a)
	_, err := net.Dial("unix", p.Socket())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial in down: got %v, want ECONNREFUSED", err)
	}
	if fi, err := os.Lstat(p.Socket()); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file in down: %v, %v; want a socket left in place", fi, err)
	}
	if s := p.Stats(); s.Open != 0 {
		t.Fatalf("open connections in down: %d, want 0", s.Open)
	}

	set(t, p, faultproxy.Pass)
	b := dial(t, p.Socket())
	roundTrip(t, b, "b1")
}

func TestDownClosesConnectionsHeldByHang(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path})
	a := dial(t, p.Socket())
	roundTrip(t, a, "a1")
	set(t, p, faultproxy.Hang)
	b := dial(t, p.Socket())
	io.WriteString(b, "b1")

	set(t, p, faultproxy.Down)
	expectClosed(t, a)
	expectClosed(t, b)
	if got := e.accepted.Load(); got != 1 {
		t.Fatalf("upstream saw %d connections, want 1: the held one must not be forwarded", got)
	}

	set(t, p, faultproxy.Hang) // straight from Down: listening, but holding
	c := dial(t, p.Socket())
	io.WriteString(c, "c1")
	expectStalled(t, c, 100*time.Millisecond)
	set(t, p, faultproxy.Pass)
	expectEcho(t, c, "c1")
}

func TestStartDown(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path, Mode: faultproxy.Down})
	if _, err := net.Dial("unix", p.Socket()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a proxy started down: got %v, want ECONNREFUSED", err)
	}
	set(t, p, faultproxy.Pass)
	roundTrip(t, dial(t, p.Socket()), "x")
}

func TestUpstreamMissingClosesTheClient(t *testing.T) {
	p := faultproxy.Start(t, faultproxy.Options{Upstream: filepath.Join(shortTempDir(t), "none.sock")})
	c := dial(t, p.Socket())
	expectClosed(t, c)
	if s := p.Stats(); s.DialErrors != 1 || s.Forwarded != 0 {
		t.Fatalf("stats: got %+v, want 1 dial error, 0 forwarded", s)
	}
}

func TestCloseRemovesWhatItMadeAndEndsConnections(t *testing.T) {
	e := startEcho(t)
	for _, mode := range []faultproxy.Mode{faultproxy.Pass, faultproxy.Hang, faultproxy.Down} {
		t.Run(mode.String(), func(t *testing.T) {
			own := shortTempDir(t)
			for _, dir := range []string{"", own} {
				p, err := faultproxy.New(faultproxy.Options{Dir: dir, Upstream: e.path})
				if err != nil {
					t.Fatal(err)
				}
				a := dial(t, p.Socket())
				roundTrip(t, a, "a")
				set(t, p, mode)
				if err := p.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				expectClosed(t, a)
				if _, err := os.Lstat(p.Socket()); !os.IsNotExist(err) {
					t.Fatalf("socket after Close: %v, want it gone", err)
				}
				_, err = os.Stat(filepath.Dir(p.Socket()))
				if dir == "" && !os.IsNotExist(err) {
					t.Fatalf("temporary folder after Close: %v, want it gone", err)
				}
				if dir != "" && err != nil {
					t.Fatalf("the caller's folder after Close: %v, want it kept", err)
				}
				if err := p.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if err := p.Set(faultproxy.Pass); !errors.Is(err, faultproxy.ErrClosed) {
					t.Fatalf("Set after Close: got %v, want ErrClosed", err)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name, upstream, dockerHost string
		want                       string // "" means an error
	}{
		{"default", "", "", faultproxy.DefaultUpstream},
		{"DOCKER_HOST", "", "unix:///run/other/docker.sock", "/run/other/docker.sock"},
		{"tcp DOCKER_HOST", "", "tcp://127.0.0.1:2375", ""},
		{"upstream path", "/a/b.sock", "tcp://127.0.0.1:2375", "/a/b.sock"},
		{"upstream URL", "unix:///a/b.sock", "", "/a/b.sock"},
		{"tcp upstream", "tcp://127.0.0.1:2375", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", tt.dockerHost)
			p, err := faultproxy.New(faultproxy.Options{Upstream: tt.upstream})
			if tt.want == "" {
				if err == nil {
					p.Close()
					t.Fatalf("New: got upstream %q, want an error", p.Upstream())
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer p.Close()
			if p.Upstream() != tt.want {
				t.Fatalf("Upstream() = %q, want %q", p.Upstream(), tt.want)
			}
			if filepath.Base(p.Socket()) != "docker.sock" {
				t.Fatalf("Socket() = %q, want a docker.sock", p.Socket())
			}
		})
	}

	long := filepath.Join(os.TempDir(), strings.Repeat("d", 110))
	if _, err := faultproxy.New(faultproxy.Options{Dir: long, Upstream: "/x.sock"}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("New with a %d-byte socket path: got %v, want a path-length error", len(long), err)
	}
	if _, err := os.Stat(long); !os.IsNotExist(err) {
		t.Fatalf("New created %s: %v", long, err)
	}
	if _, err := faultproxy.New(faultproxy.Options{Upstream: "/x.sock", Mode: faultproxy.Mode(7)}); err == nil {
		t.Fatal("New with Mode(7): got no error")
	}
	p := faultproxy.Start(t, faultproxy.Options{Upstream: "/x.sock", Name: "d.sock"})
	if filepath.Base(p.Socket()) != "d.sock" {
		t.Fatalf("Socket() = %q, want d.sock", p.Socket())
	}
	if err := p.Set(faultproxy.Mode(7)); err == nil {
		t.Fatal("Set(Mode(7)): got no error")
	}
	if got := faultproxy.Mode(7).String(); got != "Mode(7)" {
		t.Fatalf("Mode(7).String() = %q", got)
	}
	if _, err := faultproxy.New(faultproxy.Options{Dir: filepath.Dir(p.Socket()), Name: "up.sock", Upstream: filepath.Join(filepath.Dir(p.Socket()), "up.sock")}); err == nil {
		t.Fatal("New with the upstream as its own socket: got no error")
	}
}

// TestConcurrentUse flips modes while clients come and go; run with -race. Afterwards the
// proxy still forwards, and closing the clients leaves no connection open.
func TestConcurrentUse(t *testing.T) {
	e := startEcho(t)
	p := faultproxy.Start(t, faultproxy.Options{Upstream: e.path})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var trips atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("unix", p.Socket(), time.Second)
				if err != nil {
					time.Sleep(time.Millisecond) // down, or between Down and listening again
					continue
				}
				c.SetDeadline(time.Now().Add(20 * time.Millisecond))
				b := make([]byte, 3)
				if _, err := io.WriteString(c, "abc"); err == nil {
					if _, err := io.ReadFull(c, b); err == nil && string(b) == "abc" {
						trips.Add(1)
					}
				}
				c.Close()
				_ = p.Stats()
			}
		}()
	}
	modes := []faultproxy.Mode{faultproxy.Hang, faultproxy.Pass, faultproxy.Down, faultproxy.Hang, faultproxy.Down, faultproxy.Pass}
	for i := range 60 {
		if err := p.Set(modes[i%len(modes)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // let the clients interleave with each mode
	}
	close(stop)
	wg.Wait()
	set(t, p, faultproxy.Pass)
	roundTrip(t, dial(t, p.Socket()), "after")
	if trips.Load() == 0 {
		t.Fatal("no round trip succeeded while modes flipped")
	}
	eventually(t, "all connections closed", func() bool { return p.Stats().Open <= 1 })
}
