package docker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
)

// Exec tells a check that ran and failed (a command too slow, a non-zero exit) from one the
// Engine did not carry out (EUNAVAILABLE), which the worker counts for nothing.
func TestExecTimeoutIsTheCommandsOrTheEngines(t *testing.T) {
	rt, name := newRuntime(t)
	c, err := rt.Start(ctx(t), echoTask("--listen", ":7777"), nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(rt *docker.Runtime, timeout time.Duration, cmd ...string) (int, string, error) {
		cctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return rt.Exec(cctx, c.ID, cmd)
	}
	if code, out, err := check(rt, 30*time.Second, "/echo", "--check", "http://127.0.0.1:9/"); err != nil || code != 1 || !strings.Contains(out, "refused") {
		t.Errorf("a failing check: got %d %q %v, want exit code 1 and the answer", code, out, err)
	}
	// A command slower than the check's timeout: the check ran, and failed.
	start := time.Now()
	_, _, err = check(rt, time.Second, "/echo", "--listen=", "--sleep", "20s")
	if err == nil || task.ErrorCode(err) == task.EUNAVAILABLE || !strings.Contains(err.Error(), "did not finish in time") {
		t.Errorf("a command slower than the timeout: got %v, want an error saying it did not finish in time, not EUNAVAILABLE", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a timed-out check took %v, want about its timeout", took)
	}

	// An Engine that hangs: the check could not be carried out.
	hung, proxy := proxiedRuntime(t, name, 2*time.Second)
	if code, _, err := check(hung, 30*time.Second, "/echo", "--check", "http://127.0.0.1:7777/health"); err != nil || code != 0 {
		t.Fatalf("a passing check through the proxy: got %d, %v", code, err)
	}
	proxy.Set(faultproxy.Hang)
	if _, _, err := check(hung, time.Second, "/echo", "--check", "http://127.0.0.1:7777/health"); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("a check while the Engine hangs: got %v, want EUNAVAILABLE", err)
	}
}
