package docker_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
)

var _ worker.Runtime = (*docker.Runtime)(nil)

// newRuntime returns a Runtime owned by a worker name unique to the test, and removes every
// container of that worker when the test ends.
func newRuntime(t *testing.T) (*docker.Runtime, string) {
	t.Helper()
	return newRuntimeWith(t, docker.Options{})
}

// proxiedRuntime returns a Runtime of worker name whose calls go through a new fault proxy in
// front of the Engine, each with callTimeout, and the proxy; the proxy passes calls again, and
// the runtime is closed, when the test ends.
func proxiedRuntime(t *testing.T, name string, callTimeout time.Duration) (*docker.Runtime, *faultproxy.Proxy) {
	t.Helper()
	proxy := faultproxy.Start(t, faultproxy.Options{})
	cli, err := client.NewClientWithOpts(client.WithHost(proxy.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	rt := docker.NewWithClient(cli, docker.Options{Worker: name, CallTimeout: callTimeout})
	t.Cleanup(func() {
		proxy.Set(faultproxy.Pass)
		rt.Close()
	})
	return rt, proxy
}

// newRuntimeWith is newRuntime with opts; a Worker name in opts is kept (a second runtime of one
// worker), and StopGrace defaults to 5s. The runtime is closed, and every container of its worker
// removed, when the test ends.
func newRuntimeWith(t *testing.T, opts docker.Options) (*docker.Runtime, string) {
	t.Helper()
	testenv.BuildEchoImage(t)
	if opts.Worker == "" {
		opts.Worker = "test-" + uuid.NewString()[:8]
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 5 * time.Second
	}
	rt, err := docker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testenv.RemoveLabelled(t, docker.LabelWorker+"="+opts.Worker)
		rt.Close()
	})
	return rt, opts.Worker
}

// watch runs rt.Watch from a second ago until the test ends, and returns the events it
// delivers; the test fails when Watch does not end with context.Canceled.
func watch(t *testing.T, rt *docker.Runtime) <-chan task.ContainerEvent {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx(t))
	events := make(chan task.ContainerEvent, 16)
	done := make(chan error, 1)
	go func() {
		done <- rt.Watch(wctx, time.Now().Add(-time.Second), func(ev task.ContainerEvent) { events <- ev })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch after cancel: got %v, want context.Canceled", err)
		}
	})
	return events
}

func echoTask(args ...string) task.Task {
	return task.Task{ID: uuid.New(), Name: "echo", Image: testenv.EchoImage, Cmd: args}
}

func ctx(t *testing.T) context.Context { return testenv.Ctx(t, time.Minute) }

func TestStartPublishesPortsAndLabels(t *testing.T) {
	rt, name := newRuntime(t)
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	tk.Env = []string{"GREETING=hi"}
	tk.Memory = 64 << 20
	tk.MemoryReservation = 32 << 20
	tk.PidsLimit = 64
	tk.StopSignal = "SIGINT"
	tk.StopTimeout = 3
	tk.Cpu = 0.5
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Running || c.TaskID != tk.ID || c.StartedAt.IsZero() {
		t.Fatalf("got %+v, want a running container of task %s with a start time", c, tk.ID)
	}
	bs := c.HostPorts["7777/tcp"]
	if len(bs) == 0 || bs[0].HostPort == "" {
		t.Fatalf("got HostPorts %v, want 7777/tcp published", c.HostPorts)
	}
	for port, list := range c.HostPorts {
		if len(list) == 0 {
			t.Errorf("HostPorts[%s] is empty", port)
		}
	}
	body := testenv.GetWithin(t, "http://127.0.0.1:"+bs[0].HostPort+"/health", 10*time.Second)
	if body != "ok" {
		t.Errorf("GET /health: got %q, want %q", body, "ok")
	}

	info, err := testenv.Docker(t).ContainerInspect(ctx(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config.Labels[task.LabelTaskID]; got != tk.ID.String() {
		t.Errorf("label %s: got %q, want %q", task.LabelTaskID, got, tk.ID)
	}
	if got := info.Config.Labels[docker.LabelWorker]; got != name {
		t.Errorf("label %s: got %q, want %q", docker.LabelWorker, got, name)
	}
	if got := info.HostConfig.RestartPolicy.Name; got != "no" {
		t.Errorf("Docker restart policy: got %q, want %q (the worker owns restarts)", got, "no")
	}
	if got, want := info.HostConfig.NanoCPUs, int64(5e8); got != want {
		t.Errorf("NanoCPUs: got %d, want %d", got, want)
	}
	if got, want := info.HostConfig.Memory, int64(64<<20); got != want {
		t.Errorf("Memory: got %d, want %d", got, want)
	}
	if got := info.HostConfig.MemoryReservation; got != 32<<20 {
		t.Errorf("MemoryReservation: got %d, want %d", got, 32<<20)
	}
	if got := info.HostConfig.PidsLimit; got == nil || *got != 64 {
		t.Errorf("PidsLimit: got %v, want 64", got)
	}
	if got := info.Config.StopSignal; got != "SIGINT" {
		t.Errorf("StopSignal: got %q, want SIGINT", got)
	}
	if got := info.Config.StopTimeout; got == nil || *got != 3 {
		t.Errorf("StopTimeout: got %v, want 3", got)
	}
	if !contains(info.Config.Env, "GREETING=hi") {
		t.Errorf("Env: got %v, want GREETING=hi in it", info.Config.Env)
	}

	list, err := rt.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != c.ID || !list[0].Running || list[0].TaskID != tk.ID {
		t.Errorf("List: got %+v, want just the running container %s", list, c.ID)
	}

	// Stop removes, and is idempotent.
	for i := range 2 {
		if err := rt.Stop(ctx(t), c.ID, 0); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	got, err := rt.Inspect(ctx(t), c.ID)
	if err != nil || got.Running {
		t.Fatalf("Inspect after Stop: got %+v, %v; want a stopped container that is still there", got, err)
	}
	for i := range 2 {
		if err := rt.Remove(ctx(t), c.ID); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := rt.Inspect(ctx(t), c.ID); task.ErrorCode(err) != task.ENOTFOUND {
		t.Fatalf("Inspect after Remove: got %v, want ENOTFOUND", err)
	}
}

func TestPortBindingPinsHostPort(t *testing.T) {
	rt, _ := newRuntime(t)
	port := testenv.FreePort(t)
	tk := echoTask("--listen", ":7777")
	tk.PortBindings = map[string]string{"7777/tcp": port}
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HostPorts["7777/tcp"]; len(got) == 0 || got[0].HostPort != port {
		t.Fatalf("HostPorts: got %v, want 7777/tcp on %s", c.HostPorts, port)
	}
	if body := testenv.GetWithin(t, "http://127.0.0.1:"+port+"/health", 10*time.Second); body != "ok" {
		t.Errorf("got %q, want ok", body)
	}
}

func TestExitIsObservedThroughWatchAndInspect(t *testing.T) {
	rt, _ := newRuntime(t)
	events := watch(t, rt)

	tk := echoTask("--print", "bye", "--sleep", "300ms", "--exit", "3")
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Kind != task.ContainerDied || ev.ContainerID != c.ID {
				continue
			}
			if ev.TaskID != tk.ID || ev.ExitCode != 3 {
				t.Fatalf("die event: got %+v, want task %s exit code 3", ev, tk.ID)
			}
			got, err := rt.Inspect(ctx(t), c.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Running || got.ExitCode != 3 || got.OOMKilled || got.FinishedAt.IsZero() {
				t.Fatalf("Inspect after exit: got %+v, want exited with code 3 and a finish time", got)
			}
			return
		case <-deadline:
			t.Fatal("no die event within 30s")
		}
	}
}

func TestMissingImageFailsWithoutLeavingAContainer(t *testing.T) {
	rt, name := newRuntime(t)
	tk := echoTask()
	tk.Image = "cube-test/does-not-exist:v0"
	_, err := rt.Start(ctx(t), tk, nil)
	if err == nil {
		t.Fatal("Start of a missing image: got nil error")
	}
	if !strings.Contains(err.Error(), "image pull failed") || !strings.Contains(err.Error(), tk.Image) {
		t.Errorf("got %q, want it to say the pull of %s failed", err, tk.Image)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+name)); n != 0 {
		t.Errorf("got %d containers left, want 0", n)
	}
}

func TestStartFailureRemovesTheContainer(t *testing.T) {
	rt, name := newRuntime(t)
	// A host port that is already taken lets create succeed and makes start fail.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	tk := echoTask("--listen", ":7777")
	tk.PortBindings = map[string]string{"7777/tcp": port}
	_, err = rt.Start(ctx(t), tk, nil)
	if err == nil {
		t.Fatal("got nil error, want the start to fail on a taken host port")
	}
	if !strings.Contains(err.Error(), "start container") {
		t.Errorf("got %q, want it to say the start failed", err)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+name)); n != 0 {
		t.Errorf("got %d containers left, want 0", n)
	}
}

func TestStopAndInspectOfUnknownContainer(t *testing.T) {
	rt, _ := newRuntime(t)
	if err := rt.Stop(ctx(t), "cube-no-such-container", 0); err != nil {
		t.Errorf("Stop of a missing container: got %v, want nil", err)
	}
	if err := rt.Remove(ctx(t), "cube-no-such-container"); err != nil {
		t.Errorf("Remove of a missing container: got %v, want nil", err)
	}
	if _, err := rt.Inspect(ctx(t), "cube-no-such-container"); task.ErrorCode(err) != task.ENOTFOUND {
		t.Errorf("Inspect of a missing container: got %v (%s), want ENOTFOUND", err, task.ErrorCode(err))
	}
}

func TestUnreachableEngineIsUnavailable(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	rt := docker.NewWithClient(cli, docker.Options{CallTimeout: 2 * time.Second})
	defer rt.Close()
	if err := rt.Ping(ctx(t)); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("Ping: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
	if _, err := rt.Start(ctx(t), echoTask(), nil); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("Start: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
	if id, err := rt.EngineID(ctx(t)); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("EngineID: got %q, %v (%s), want EUNAVAILABLE", id, err, task.ErrorCode(err))
	}
	if list, err := rt.List(ctx(t)); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("List: got %v, %v (%s), want EUNAVAILABLE", list, err, task.ErrorCode(err))
	}
}

// EngineID is the ID docker info reports, the same through any client of the Engine.
func TestEngineID(t *testing.T) {
	rt, _ := newRuntime(t)
	id, err := rt.EngineID(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	info, err := testenv.Docker(t).Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || id != info.ID {
		t.Errorf("EngineID: got %q, want docker info's %q", id, info.ID)
	}
}

func TestConcurrentStartsOfOneImage(t *testing.T) {
	rt, name := newRuntime(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := rt.Start(ctx(t), echoTask("--listen", ":7777"), nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := len(testenv.Containers(t, docker.LabelWorker+"="+name)); got != n {
		t.Errorf("got %d containers, want %d", got, n)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// List decodes a container's spec label once, when it first sees the container, keeps only what
// it says of the start (readable, RestartCount) and forgets it once the container is gone: a
// reconcile lists every container every few seconds. Inspect decodes the whole spec.
func TestListDecodesEachSpecOnce(t *testing.T) {
	rt, _ := newRuntime(t)
	a, b := echoTask(), echoTask()
	b.RestartCount = 2
	ca, err := rt.Start(ctx(t), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := rt.Start(ctx(t), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	list := func() map[string]task.Container {
		t.Helper()
		list, err := rt.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]task.Container{}
		for _, c := range list {
			out[c.ID] = c
		}
		return out
	}
	first := list()
	for _, c := range []struct {
		id string
		tk task.Task
	}{{ca.ID, a}, {cb.ID, b}} {
		if l := first[c.id]; !l.SpecRead || l.SpecRestartCount != c.tk.RestartCount || l.Spec != nil {
			t.Errorf("List: container %s: got SpecRead %v, SpecRestartCount %d, Spec %p; want true, %d, nil",
				task.ShortID(c.id), l.SpecRead, l.SpecRestartCount, l.Spec, c.tk.RestartCount)
		}
		info, err := rt.Inspect(ctx(t), c.id)
		if s := info.Spec; err != nil || s == nil || s.ID != c.tk.ID || s.Name != c.tk.Name || s.Image != c.tk.Image ||
			!info.SpecRead || info.SpecRestartCount != c.tk.RestartCount {
			t.Errorf("Inspect: container %s: got spec %+v (%v, %d), %v; want task %s (%s)", task.ShortID(c.id), s,
				info.SpecRead, info.SpecRestartCount, err, c.tk.ID, c.tk.Name)
		}
	}
	if second := list(); len(second) != 2 || rt.DecodedSpecs() != 2 {
		t.Errorf("second List: got %d containers and %d spec labels decoded in all, want 2 and 2", len(second), rt.DecodedSpecs())
	}
	if got := rt.CachedSpecs(); got != 2 {
		t.Errorf("cached specs: got %d, want 2", got)
	}
	if err := rt.Remove(ctx(t), ca.ID); err != nil {
		t.Fatal(err)
	}
	if third := list(); len(third) != 1 || !third[cb.ID].SpecRead || third[cb.ID].SpecRestartCount != 2 || rt.DecodedSpecs() != 2 {
		t.Errorf("List after a removal: got %+v (%d decoded in all), want just %s, not decoded again", third, rt.DecodedSpecs(), task.ShortID(cb.ID))
	}
	if got := rt.CachedSpecs(); got != 1 {
		t.Errorf("cached specs after a removal: got %d, want 1", got)
	}
}
