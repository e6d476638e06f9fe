package faultproxy_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"regexp"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
)

// These tests drive the real Docker Engine through the proxy with the Docker SDK, the way the
// worker talks to it.

func dockerClient(tb testing.TB, host string) *client.Client {
	tb.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// startDocker starts a proxy in front of the machine's Docker Engine, and fails the test when
// the Engine does not answer directly.
func startDocker(tb testing.TB) (*faultproxy.Proxy, *client.Client) {
	tb.Helper()
	p := faultproxy.Start(tb, faultproxy.Options{})
	direct := dockerClient(tb, "unix://"+p.Upstream())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := direct.Ping(ctx); err != nil {
		tb.Fatalf("the Docker Engine at %s does not answer: %v", p.Upstream(), err)
	}
	return p, direct
}

// ping pings through cli within d and returns the error and how long it took.
func ping(cli *client.Client, d time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	_, err := cli.Ping(ctx)
	return time.Since(start), err
}

func TestDockerPingThroughModes(t *testing.T) {
	p, _ := startDocker(t)
	// cli keeps its connection from one ping to the next; each ping through fresh dials anew.
	cli := dockerClient(t, p.DockerHost())
	both := func(f func(name string, cli *client.Client)) {
		f("kept connection", cli)
		f("new connection", dockerClient(t, p.DockerHost()))
	}
	pass := func(name string, cli *client.Client) {
		t.Helper()
		if _, err := ping(cli, 5*time.Second); err != nil {
			t.Fatalf("%s: ping in %v: %v", name, p.Mode(), err)
		}
	}
	both(pass)

	set(t, p, faultproxy.Hang)
	both(func(name string, cli *client.Client) {
		took, err := ping(cli, 500*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: ping in hang: got %v, want context.DeadlineExceeded", name, err)
		}
		if took > 2*time.Second {
			t.Fatalf("%s: ping in hang took %v with a 500ms deadline", name, took)
		}
	})
	set(t, p, faultproxy.Pass)
	both(pass)

	set(t, p, faultproxy.Down)
	both(func(name string, cli *client.Client) {
		took, err := ping(cli, 5*time.Second)
		if !client.IsErrConnectionFailed(err) {
			t.Fatalf("%s: ping in down: got %v, want a connection error", name, err)
		}
		if took > time.Second {
			t.Fatalf("%s: ping in down took %v, want it to fail fast", name, took)
		}
	})
	set(t, p, faultproxy.Pass)
	both(pass)
}

func TestDockerEventsSurviveHangAndBreakOnDown(t *testing.T) {
	p, direct := startDocker(t)
	cli := dockerClient(t, p.DockerHost())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Negotiate before subscribing: Events reads the negotiated version without a lock.
	pg, err := cli.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli.NegotiateAPIVersionPing(pg)

	// Volumes make events without an image or a container; they are created directly, so
	// that only the event stream goes through the proxy.
	var suffix [6]byte
	rand.Read(suffix[:])
	before := "faultproxy-test-before-" + hex.EncodeToString(suffix[:])
	during := "faultproxy-test-during-" + hex.EncodeToString(suffix[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, name := range []string{before, during} {
			if err := direct.VolumeRemove(ctx, name, true); err != nil {
				t.Errorf("remove volume %s: %v", name, err)
			}
		}
	})
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.VolumeEventType)),
		filters.Arg("event", string(events.ActionCreate)),
		filters.Arg("volume", before),
		filters.Arg("volume", during),
	)})
	create := func(name string) {
		t.Helper()
		if _, err := direct.VolumeCreate(ctx, volume.CreateOptions{Name: name}); err != nil {
			t.Fatalf("create volume %s: %v", name, err)
		}
	}
	expectEvent := func(name string) {
		t.Helper()
		select {
		case m := <-msgs:
			if m.Actor.ID != name {
				t.Fatalf("event for volume %q, want %q", m.Actor.ID, name)
			}
		case err := <-errs:
			t.Fatalf("events stream ended waiting for %s: %v", name, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for volume %s within 5 s", name)
		}
	}

	create(before)
	expectEvent(before)

	set(t, p, faultproxy.Hang)
	create(during)
	select {
	case m := <-msgs:
		t.Fatalf("event for %s came through a hung proxy", m.Actor.ID)
	case err := <-errs:
		t.Fatalf("events stream ended in hang: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The stalled stream resumes and delivers what the daemon wrote meanwhile.
	set(t, p, faultproxy.Pass)
	expectEvent(during)

	// A daemon that dies ends the stream with an error, not silence.
	set(t, p, faultproxy.Down)
	select {
	case m := <-msgs:
		t.Fatalf("event for %s after down", m.Actor.ID)
	case err := <-errs:
		// The SDK's JSON decoder meets the end of a chunked body cut short.
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("events stream after down: got %v, want io.ErrUnexpectedEOF", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("events stream still open 2 s after down")
	}
}

// A delayed request reaches the daemon late, and is still forwarded when its client has given
// up meanwhile (what the daemon then does with it is its own affair: it may see the client gone).
func TestDockerDelayedRequest(t *testing.T) {
	p, _ := startDocker(t)
	cli := dockerClient(t, p.DockerHost())
	const d = 500 * time.Millisecond
	p.Delay(regexp.MustCompile(`^(GET|HEAD) /[^ ]*_ping`), d)
	took, err := ping(cli, 10*time.Second)
	if err != nil || took < d {
		t.Fatalf("delayed ping: took %v, err %v; want success after at least %v", took, err, d)
	}
	if now, total := p.Held(); now != 0 || total != 1 {
		t.Errorf("Held after the ping: %d now, %d in all; want 0 and 1", now, total)
	}

	p.Delay(regexp.MustCompile(`^POST /[^ ]*volumes/create`), d)
	up := p.Stats().BytesUp
	var suffix [4]byte
	rand.Read(suffix[:])
	name := "faultproxy-delay-" + hex.EncodeToString(suffix[:])
	t.Cleanup(func() {
		direct := dockerClient(t, "unix://"+p.Upstream())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		direct.VolumeRemove(ctx, name, true)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = cli.VolumeCreate(ctx, volume.CreateOptions{Name: name})
	cancel()
	if err == nil {
		t.Fatal("VolumeCreate returned within 100ms through a delay of 500ms")
	}
	deadline := time.Now().Add(10 * time.Second)
	for now, _ := p.Held(); now != 0; now, _ = p.Held() {
		if time.Now().After(deadline) {
			t.Fatal("the held request was not let go within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sent := p.Stats().BytesUp - up; sent < int64(len("POST /volumes/create HTTP/1.1\r\n")) {
		t.Errorf("after the hold %d bytes went to the daemon, want the held request", sent)
	}

	p.Delay(nil, 0)
	if took, err := ping(cli, 10*time.Second); err != nil || took >= d {
		t.Errorf("ping after the delay ended: took %v, err %v; want fast", took, err)
	}
}
