// Package faultproxy puts a switchable fault between a program and the Docker Engine, so that
// tests can make Docker hang or go away without touching the machine's own daemon.
//
// A Proxy listens on a unix socket of its own and forwards every connection to an upstream unix
// socket (the Docker Engine's), byte for byte: it never parses HTTP, so hijacked and streaming
// connections (events, attach, logs, half-closes) pass through as they are. The program under
// test is pointed at the proxy with DOCKER_HOST=[Proxy.DockerHost]; the test switches the fault
// at run time with [Proxy.Set]:
//
//	Pass  forward every connection (the default).
//	Hang  a daemon that stopped answering (SIGSTOP): new connections are accepted and held,
//	      never forwarded or answered; open connections stop moving bytes both ways and stay
//	      open. A Docker SDK call ends only by its context (context.DeadlineExceeded), and an
//	      events stream goes quiet without an error. Leaving Hang resumes everything, as
//	      SIGCONT would: stalled streams carry on where they stopped, delivering what the
//	      daemon wrote meanwhile, and held connections are forwarded with whatever their
//	      client wrote, even if the client has given up on them since (the daemon may still
//	      act on such a request, as a real one would).
//	Down  a daemon that died: every open connection is closed and the socket stops listening,
//	      so dials fail at once with ECONNREFUSED. The socket file stays, as a killed dockerd
//	      leaves its own. The SDK's calls fail fast with client.IsErrConnectionFailed, and its
//	      events stream ends with io.ErrUnexpectedEOF. Leaving Down listens again on the same
//	      path; nothing from before comes back, as after a daemon restart.
//
//	   Pass ──▶ Hang ──▶ Pass     stalled streams resume
//	   Pass ──▶ Down ──▶ Pass     streams broken, new connections work again
//	   any mode ──▶ any mode, at any time, from any goroutine
//
// Besides a mode, a proxy may delay some requests on their way to the daemon ([Proxy.Delay]):
// a request whose bytes match a pattern (say, a container start) is held for a while and then
// forwarded, even if its client has died meanwhile (the daemon may then carry it out, or see
// the client gone and drop it). A test can so kill the program while that call is under way.
//
// The proxy is only a fault injector for tests: it has no access control beyond the socket
// file's mode, and every connection costs two goroutines while it is open.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is the fault a Proxy applies.
type Mode int

const (
	// Pass forwards every connection to the upstream.
	Pass Mode = iota
	// Hang accepts connections but moves no bytes, like a stopped (SIGSTOP) daemon.
	Hang
	// Down closes every connection and refuses new ones, like a dead daemon.
	Down
)

// String returns "pass", "hang" or "down", or "Mode(N)" for anything else.
func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Hang:
		return "hang"
	case Down:
		return "down"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ErrClosed is returned by Set on a Proxy that has been closed.
var ErrClosed = errors.New("faultproxy: proxy closed")

// DefaultUpstream is the Docker Engine's socket when DOCKER_HOST does not name one.
const DefaultUpstream = "/var/run/docker.sock"

// maxSocketPath is the longest path a unix socket address holds on Linux (sun_path is 108 bytes
// with its terminating NUL); longer paths fail in bind with a confusing EINVAL.
const maxSocketPath = 107

// Options configures a Proxy. The zero value listens in a new temporary folder and forwards to
// the Docker Engine named by DOCKER_HOST.
type Options struct {
	// Dir is the folder the socket is created in. Empty means a new temporary folder, removed
	// by Close. A given Dir is left in place; only the socket file is removed.
	Dir string
	// Name is the socket's file name in Dir; empty means "docker.sock".
	Name string
	// Upstream is the path of the unix socket to forward to, with or without "unix://".
	// Empty means DOCKER_HOST's path when DOCKER_HOST is a unix:// address, and
	// DefaultUpstream when DOCKER_HOST is unset; any other DOCKER_HOST is an error.
	Upstream string
	// DialTimeout bounds each dial to the upstream; zero means 5 s. A connection whose dial
	// fails is closed, which its client sees as a daemon closing it without an answer.
	DialTimeout time.Duration
	// Mode is the fault the proxy starts in; the zero value is Pass.
	Mode Mode
}

// Stats counts what a Proxy has carried since it started.
type Stats struct {
	Accepted   int64 // connections accepted from clients, in any mode
	Forwarded  int64 // connections dialed through to the upstream
	DialErrors int64 // dials to the upstream that failed
	Open       int   // connections open now, held or forwarded
	BytesUp    int64 // bytes written to the upstream (client to daemon)
	BytesDown  int64 // bytes written to clients (daemon to client)
}

// Proxy is a fault-injecting proxy on a unix socket. Its methods are safe for concurrent use.
type Proxy struct {
	socket      string
	upstream    string
	tmpDir      string // created by New, removed by Close
	dialTimeout time.Duration

	setMu sync.Mutex // serializes Set and Close, which listen and close

	mu     sync.Mutex
	mode   Mode
	closed bool
	ln     *net.UnixListener // nil while Down and after Close
	conns  map[*conn]struct{}

	// hang is non-nil while the mode is Hang; its channel is closed when Hang ends. Every
	// connection reads it before each read and write, so it is an atomic rather than mu.
	hang atomic.Pointer[chan struct{}]

	wg sync.WaitGroup // accept loops and connections

	delay         atomic.Pointer[delayRule] // requests to hold before forwarding, if any
	held, delayed atomic.Int64              // requests held now, and held in all

	accepted, forwarded, dialErrors, bytesUp, bytesDown atomic.Int64
}

// delayRule holds the requests that match re for d.
type delayRule struct {
	re *regexp.Regexp
	d  time.Duration
}

// Delay makes the proxy hold each request that matches re (in the bytes a client writes, as they
// arrive: a request line such as `POST /v1.41/containers/abc/start`) for d before it forwards
// it; a nil re or a d of 0 ends the delay for requests that arrive from now on. A held request
// is forwarded when its time is up whether or not its client is still there; Down and Close drop
// it. Only requests that come whole in one write match reliably, as the Docker SDK writes them.
func (p *Proxy) Delay(re *regexp.Regexp, d time.Duration) {
	if re == nil || d <= 0 {
		p.delay.Store(nil)
		return
	}
	p.delay.Store(&delayRule{re: re, d: d})
}

// Held returns how many requests the proxy holds now under Delay, and how many it has held in
// all.
func (p *Proxy) Held() (now, total int64) { return p.held.Load(), p.delayed.Load() }

// New starts a proxy listening on its socket in the mode opts.Mode. It returns an error when
// the upstream cannot be worked out from DOCKER_HOST, when the socket's path is too long for a
// unix socket, or when it cannot listen. It does not dial the upstream until a client connects.
func New(opts Options) (*Proxy, error) {
	upstream, err := resolveUpstream(opts.Upstream, os.Getenv)
	if err != nil {
		return nil, err
	}
	if opts.Mode != Pass && opts.Mode != Hang && opts.Mode != Down {
		return nil, fmt.Errorf("faultproxy: unknown mode %v", opts.Mode)
	}
	name := opts.Name
	if name == "" {
		name = "docker.sock"
	}
	p := &Proxy{
		upstream:    upstream,
		dialTimeout: opts.DialTimeout,
		conns:       make(map[*conn]struct{}),
	}
	if p.dialTimeout <= 0 {
		p.dialTimeout = 5 * time.Second
	}
	dir := opts.Dir
	if dir == "" {
		// os.TempDir rather than t.TempDir: a test's folder name is long enough to overflow
		// a socket path.
		if dir, err = os.MkdirTemp("", "faultproxy-"); err != nil {
			return nil, fmt.Errorf("faultproxy: %w", err)
		}
		p.tmpDir = dir
	}
	p.socket = filepath.Join(dir, name)
	fail := func(err error) (*Proxy, error) {
		if p.tmpDir != "" {
			os.RemoveAll(p.tmpDir)
		}
		return nil, err
	}
	if len(p.socket) > maxSocketPath {
		return fail(fmt.Errorf("faultproxy: socket path %s is %d bytes, longer than a unix socket holds (%d)", p.socket, len(p.socket), maxSocketPath))
	}
	if p.socket == p.upstream {
		return fail(fmt.Errorf("faultproxy: socket %s is the upstream itself", p.socket))
	}
	// Start in Down by listening and then going Down, so the socket file is there and dials
	// are refused, as everywhere else in Down.
	if err := p.listen(); err != nil {
		return fail(err)
	}
	if err := p.Set(opts.Mode); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Start is New for tests: it fails tb when the proxy cannot start and closes the proxy when
// the test ends.
func Start(tb testing.TB, opts Options) *Proxy {
	tb.Helper()
	p, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// resolveUpstream returns the path of the upstream socket from the option, else DOCKER_HOST.
func resolveUpstream(opt string, getenv func(string) string) (string, error) {
	if opt != "" {
		path := strings.TrimPrefix(opt, "unix://")
		if path == "" || strings.Contains(path, "://") {
			return "", fmt.Errorf("faultproxy: upstream %q is not a unix socket path", opt)
		}
		return path, nil
	}
	host := getenv("DOCKER_HOST")
	if host == "" {
		return DefaultUpstream, nil
	}
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || path == "" {
		return "", fmt.Errorf("faultproxy: DOCKER_HOST=%s is not a unix socket; set Options.Upstream", host)
	}
	return path, nil
}

// Socket returns the path of the proxy's unix socket.
func (p *Proxy) Socket() string { return p.socket }

// DockerHost returns the proxy's address as DOCKER_HOST and client.WithHost take it:
// "unix://" and the socket's path.
func (p *Proxy) DockerHost() string { return "unix://" + p.socket }

// Upstream returns the path of the unix socket the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Mode returns the fault the proxy applies now.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return Stats{
		Accepted:   p.accepted.Load(),
		Forwarded:  p.forwarded.Load(),
		DialErrors: p.dialErrors.Load(),
		Open:       open,
		BytesUp:    p.bytesUp.Load(),
		BytesDown:  p.bytesDown.Load(),
	}
}

// Set switches the proxy to mode m; setting the current mode does nothing. When it returns,
// the fault is in force: in Down every connection has been closed and dials are refused; out
// of Down the socket is listening again. It returns ErrClosed after Close, an error for an
// unknown mode, and an error when leaving Down cannot listen again (the proxy then stays Down).
func (p *Proxy) Set(m Mode) error {
	if m != Pass && m != Hang && m != Down {
		return fmt.Errorf("faultproxy: unknown mode %v", m)
	}
	p.setMu.Lock()
	defer p.setMu.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	from := p.mode
	p.mu.Unlock()
	if m == from {
		return nil
	}

	if from == Down {
		// Listen before switching the gate, so that a Hang starts holding connections from
		// the first one.
		if m == Hang {
			ch := make(chan struct{})
			p.hang.Store(&ch)
		}
		if err := p.listen(); err != nil {
			p.hang.Store(nil)
			return err
		}
		p.mu.Lock()
		p.mode = m
		p.mu.Unlock()
		return nil
	}

	switch m {
	case Hang: // from Pass
		ch := make(chan struct{})
		p.hang.Store(&ch)
		p.mu.Lock()
		p.mode = Hang
		p.mu.Unlock()
	case Pass: // from Hang
		p.mu.Lock()
		p.mode = Pass
		p.mu.Unlock()
		p.resume()
	case Down:
		p.mu.Lock()
		p.mode = Down
		ln := p.ln
		p.ln = nil
		conns := p.takeConns()
		p.mu.Unlock()
		// Leave the socket file behind, as a killed daemon does: dials then fail with
		// ECONNREFUSED rather than ENOENT.
		ln.SetUnlinkOnClose(false)
		ln.Close()
		for _, c := range conns {
			c.close()
		}
		// Connections that were held by a Hang have been closed; let their goroutines go.
		p.resume()
	}
	return nil
}

// resume ends a Hang, if one is in force.
func (p *Proxy) resume() {
	if ch := p.hang.Swap(nil); ch != nil {
		close(*ch)
	}
}

// takeConns returns the open connections, to be closed after mu is released (conn.close
// takes mu). The caller holds mu and has set ln to nil, so no connection is added meanwhile.
func (p *Proxy) takeConns() []*conn {
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// listen (re)creates the socket and starts accepting on it. A socket file left by Down is
// removed first; anything else at the path is an error.
func (p *Proxy) listen() error {
	if fi, err := os.Lstat(p.socket); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return fmt.Errorf("faultproxy: %s exists and is not a socket", p.socket)
		}
		if err := os.Remove(p.socket); err != nil {
			return fmt.Errorf("faultproxy: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("faultproxy: %w", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.wg.Add(1)
	p.mu.Unlock()
	go p.accept(ln)
	return nil
}

// accept serves ln until it is closed.
func (p *Proxy) accept(ln *net.UnixListener) {
	defer p.wg.Done()
	backoff := time.Duration(0)
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and try again, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p.accepted.Add(1)
		c := &conn{p: p, client: uc, done: make(chan struct{})}
		p.mu.Lock()
		if p.ln != ln { // went Down or closed since Accept returned
			p.mu.Unlock()
			uc.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go c.serve()
	}
}

// Close closes every connection and the socket, removes the socket file (and the temporary
// folder New made), and waits for the proxy's goroutines to end. It returns nil, also when
// called again.
func (p *Proxy) Close() error {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ln := p.ln
	p.ln = nil
	conns := p.takeConns()
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.close()
	}
	p.resume()
	p.wg.Wait()
	os.Remove(p.socket) // left by Down, or by a listener that did not unlink it
	if p.tmpDir != "" {
		os.RemoveAll(p.tmpDir)
	}
	return nil
}

// conn is one accepted client connection and, once forwarded, its upstream connection.
type conn struct {
	p      *Proxy
	client *net.UnixConn
	done   chan struct{} // closed by close

	mu       sync.Mutex
	upstream *net.UnixConn
	closed   bool
}

// serve holds the connection through a Hang, dials the upstream and copies both ways until
// both directions end or the connection is closed.
func (c *conn) serve() {
	defer c.p.wg.Done()
	defer c.close()
	if !c.flow() {
		return
	}
	d := net.Dialer{Timeout: c.p.dialTimeout}
	nc, err := d.Dial("unix", c.p.upstream)
	if err != nil {
		c.p.dialErrors.Add(1)
		return
	}
	up := nc.(*net.UnixConn)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		up.Close()
		return
	}
	c.upstream = up
	c.mu.Unlock()
	c.p.forwarded.Add(1)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.pipe(up, c.client, &c.p.bytesUp, true)
	}()
	c.pipe(c.client, up, &c.p.bytesDown, false)
	wg.Wait()
}

// flow returns once bytes may move: at once outside a Hang, when the Hang ends, or, with
// false, when the connection is closed.
func (c *conn) flow() bool {
	for {
		ch := c.p.hang.Load()
		if ch == nil {
			return true
		}
		select {
		case <-*ch:
		case <-c.done:
			return false
		}
	}
}

// pipe copies src to dst, stopping before each read and each write while the proxy hangs. At
// the end of src it half-closes dst, so a client's CloseWrite reaches the daemon (and the
// daemon's reaches the client); any other error closes the whole connection. Bytes to the
// daemon (toDaemon) that match the proxy's Delay are held first.
func (c *conn) pipe(dst, src *net.UnixConn, n *atomic.Int64, toDaemon bool) {
	buf := make([]byte, 32<<10)
	for {
		if !c.flow() {
			return
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if rule := c.p.delay.Load(); toDaemon && rule != nil && rule.re.Match(buf[:nr]) && !c.hold(rule.d) {
				return
			}
			if !c.flow() {
				return
			}
			nw, werr := dst.Write(buf[:nr])
			n.Add(int64(nw))
			if werr != nil {
				c.close()
				return
			}
		}
		if rerr == io.EOF {
			dst.CloseWrite()
			return
		}
		if rerr != nil {
			c.close()
			return
		}
	}
}

// hold waits d, counting the request as held meanwhile, and reports whether the connection is
// still open after it.
func (c *conn) hold(d time.Duration) bool {
	c.p.held.Add(1)
	c.p.delayed.Add(1)
	defer c.p.held.Add(-1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// close closes both sides and forgets the connection; it is safe to call more than once.
func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	up := c.upstream
	c.mu.Unlock()
	c.client.Close()
	if up != nil {
		up.Close()
	}
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
}
