package docker_test

import (
	"context"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
)

// A paused container is reported as such by Watch (pause and unpause events), Inspect and List:
// running, and paused.
func TestPauseIsObservedThroughWatchInspectAndList(t *testing.T) {
	rt, _ := newRuntime(t)
	c, err := rt.Start(ctx(t), echoTask("--listen", ":7777"), nil)
	if err != nil {
		t.Fatal(err)
	}
	events := watch(t, rt)
	next := func(kind task.ContainerEventKind) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Kind == kind && ev.ContainerID == c.ID {
					return
				}
			case <-deadline:
				t.Fatalf("no %s event within 30s", kind)
			}
		}
	}
	state := func() (inspected, listed task.Container) {
		t.Helper()
		inspected, err := rt.Inspect(ctx(t), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		list, err := rt.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range list {
			if l.ID == c.ID {
				listed = l
			}
		}
		return inspected, listed
	}

	cli := testenv.Docker(t)
	if err := cli.ContainerPause(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerUnpause(context.Background(), c.ID) })
	next(task.ContainerPaused)
	if i, l := state(); !i.Paused || !i.Running || !l.Paused || !l.Running {
		t.Errorf("paused: Inspect says paused %v running %v, List paused %v running %v; want both paused and running",
			i.Paused, i.Running, l.Paused, l.Running)
	}
	if err := cli.ContainerUnpause(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	next(task.ContainerUnpaused)
	if i, l := state(); i.Paused || !i.Running || l.Paused || !l.Running {
		t.Errorf("unpaused: Inspect says paused %v running %v, List paused %v running %v; want both running, not paused",
			i.Paused, i.Running, l.Paused, l.Running)
	}
}
