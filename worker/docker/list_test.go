package docker_test

import (
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
)

// List reads the Engine's answer itself, one container at a time: it returns what the labels and
// the state say of each container of its worker, and nothing of another worker's, of an
// unlabelled container, or of one labelled with this worker's name but no task.
func TestListReadsOnlyItsWorkersContainers(t *testing.T) {
	rt, name := newRuntime(t)
	other, otherName := newRuntime(t)
	created := benchTask()
	createdID, err := rt.Create(ctx(t), created)
	if err != nil {
		t.Fatal(err)
	}
	running := echoTask("--listen", ":7777")
	running.LastEvent = uuid.NewString()
	rc, err := rt.Start(ctx(t), running, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(ctx(t), benchTask()); err != nil {
		t.Fatal(err)
	}
	// This worker's name but no task label: not a task container, whoever made it.
	cli := testenv.Docker(t)
	bare, err := cli.ContainerCreate(ctx(t), &container.Config{Image: testenv.EchoImage,
		Labels: map[string]string{docker.LabelWorker: name, "CUBE.TASK.ID": uuid.NewString()}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerRemove(ctx(t), bare.ID, container.RemoveOptions{Force: true}) })

	list, err := rt.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]task.Container{}
	for _, c := range list {
		byID[c.ID] = c
	}
	if len(list) != 2 || len(byID) != 2 {
		t.Fatalf("List of %s: got %d containers %+v, want just its two task containers", name, len(list), list)
	}
	for _, want := range []struct {
		id      string
		tk      task.Task
		running bool
	}{{createdID, created, false}, {rc.ID, running, true}} {
		c, ok := byID[want.id]
		switch {
		case !ok:
			t.Errorf("List: container %s missing", task.ShortID(want.id))
		case c.TaskID != want.tk.ID || c.EventID != want.tk.LastEvent || c.Worker != name || c.Running != want.running || c.Paused:
			t.Errorf("List: got %+v, want task %s, event %s, worker %s, running %v", c, want.tk.ID, want.tk.LastEvent, name, want.running)
		case c.Created.IsZero() || time.Since(c.Created) > 10*time.Minute:
			t.Errorf("List: container %s created %v, want a minute or so ago", task.ShortID(c.ID), c.Created)
		case !c.SpecRead || c.SpecRestartCount != want.tk.RestartCount || c.Spec != nil:
			t.Errorf("List: container %s: got SpecRead %v, SpecRestartCount %d, Spec %p; want true, %d, nil (Inspect has it)",
				task.ShortID(c.ID), c.SpecRead, c.SpecRestartCount, c.Spec, want.tk.RestartCount)
		}
	}
	if ol, err := other.List(ctx(t)); err != nil || len(ol) != 1 || ol[0].Worker != otherName {
		t.Errorf("List of %s: got %+v, %v; want just its own container", otherName, ol, err)
	}
}

// A container made between two Lists is in the second with its spec decoded, and the specs the
// first decoded are kept, not decoded again.
func TestListSeesAContainerMadeBetweenLists(t *testing.T) {
	rt, _ := newRuntime(t)
	first := benchTask()
	if _, err := rt.Create(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	before, err := rt.List(ctx(t))
	if err != nil || len(before) != 1 {
		t.Fatalf("first List: got %+v, %v; want one container", before, err)
	}
	second := benchTask()
	id, err := rt.Create(ctx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	after, err := rt.List(ctx(t))
	if err != nil || len(after) != 2 {
		t.Fatalf("second List: got %+v, %v; want two containers", after, err)
	}
	for _, c := range after {
		switch c.ID {
		case before[0].ID, id:
			if !c.SpecRead || c.SpecRestartCount != 0 {
				t.Errorf("second List: container %s has SpecRead %v, SpecRestartCount %d; want true, 0", task.ShortID(c.ID), c.SpecRead, c.SpecRestartCount)
			}
		default:
			t.Errorf("second List: unexpected container %s", task.ShortID(c.ID))
		}
	}
	if got := rt.CachedSpecs(); got != 2 {
		t.Errorf("cached specs: got %d, want 2", got)
	}
	if got := rt.DecodedSpecs(); got != 2 {
		t.Errorf("spec labels decoded over two Lists: got %d, want 2 (one each)", got)
	}
}

// A List the Engine does not answer fails within the call's deadline with EUNAVAILABLE and keeps
// the cached specs: an answer that never came does not say the containers are gone.
func TestListOfAHungEngineIsUnavailable(t *testing.T) {
	_, name := newRuntime(t)
	proxy := faultproxy.Start(t, faultproxy.Options{})
	cli, err := client.NewClientWithOpts(client.WithHost(proxy.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	rt := docker.NewWithClient(cli, docker.Options{Worker: name, CallTimeout: time.Second})
	t.Cleanup(func() {
		proxy.Set(faultproxy.Pass)
		rt.Close()
	})
	if _, err := rt.Create(ctx(t), benchTask()); err != nil {
		t.Fatal(err)
	}
	if list, err := rt.List(ctx(t)); err != nil || len(list) != 1 {
		t.Fatalf("List: got %+v, %v; want one container", list, err)
	}
	proxy.Set(faultproxy.Hang)
	start := time.Now()
	_, err = rt.List(ctx(t))
	if task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("List of a hung Engine: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("List of a hung Engine took %v, want about its 1 s deadline", d)
	}
	if got := rt.CachedSpecs(); got != 1 {
		t.Errorf("cached specs after a failed List: got %d, want 1", got)
	}
	proxy.Set(faultproxy.Down)
	if _, err := rt.List(ctx(t)); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("List of a down Engine: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
}
