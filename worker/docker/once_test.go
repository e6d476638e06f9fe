package docker_test

import (
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/google/uuid"
)

// startOf returns tk as the start of a new event makes it.
func startOf(tk task.Task) task.Task {
	tk.LastEvent = uuid.NewString()
	return tk
}

// A start tried again makes no second container: it carries on with the one the start made, in
// whatever state that is.
func TestStartTriedAgainMakesNoSecondContainer(t *testing.T) {
	rt, name := newRuntime(t)
	cli := testenv.Docker(t)
	count := func(tk task.Task) int {
		return len(testenv.Containers(t, task.LabelTaskID+"="+tk.ID.String()))
	}

	t.Run("running", func(t *testing.T) {
		tk := startOf(echoTask("--listen", ":7777"))
		tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
		first, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		again, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || !again.Running || len(again.HostPorts["7777/tcp"]) == 0 {
			t.Fatalf("second Start: got %s running=%v ports %v, want %s running with its port", again.ID[:12], again.Running, again.HostPorts, first.ID[:12])
		}
		if n := count(tk); n != 1 {
			t.Fatalf("containers of the task: %d, want 1", n)
		}
		// A restart the policy decides is a new start, with a container of its own.
		tk.RestartCount++
		next, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		if next.ID == first.ID {
			t.Fatal("the restart got the first start's container")
		}
	})

	t.Run("created, never started", func(t *testing.T) {
		tk := startOf(echoTask("--print", "hi", "--exit", "3"))
		// What a worker that died between create and start leaves behind.
		created, err := cli.ContainerCreate(ctx(t), &container.Config{
			Image: testenv.EchoImage, Cmd: tk.Cmd,
			Labels: map[string]string{task.LabelTaskID: tk.ID.String(), task.LabelEventID: tk.LastEvent, docker.LabelWorker: name},
		}, nil, nil, nil, docker.ContainerName(tk))
		if err != nil {
			t.Fatal(err)
		}
		c, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID != created.ID || c.StartedAt.IsZero() {
			t.Fatalf("Start: got %s started at %v, want the created %s started", c.ID[:12], c.StartedAt, created.ID[:12])
		}
		got := waitEnded(t, rt, c.ID)
		if got.ExitCode != 3 {
			t.Fatalf("exit code %d, want 3: the container ran its command", got.ExitCode)
		}
	})

	t.Run("exited", func(t *testing.T) {
		tk := startOf(echoTask("--exit", "3"))
		first, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		waitEnded(t, rt, first.ID)
		again, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || again.Running || again.ExitCode != 3 || again.StartedAt.IsZero() {
			t.Fatalf("second Start: got %s running=%v exit %d, want %s as it ended, exit code 3", again.ID[:12], again.Running, again.ExitCode, first.ID[:12])
		}
		if n := count(tk); n != 1 {
			t.Fatalf("containers of the task: %d, want 1", n)
		}
	})

	t.Run("the name is another's", func(t *testing.T) {
		tk := startOf(echoTask("--listen", ":7777"))
		other := uuid.NewString()
		_, err := cli.ContainerCreate(ctx(t), &container.Config{
			Image:  testenv.EchoImage,
			Labels: map[string]string{task.LabelTaskID: other, task.LabelEventID: tk.LastEvent, docker.LabelWorker: "someone-else-" + name},
		}, nil, nil, nil, docker.ContainerName(tk))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { testenv.RemoveLabelled(t, task.LabelTaskID+"="+other) })
		_, err = rt.Start(ctx(t), tk, nil)
		if task.ErrorCode(err) != task.ECONFLICT {
			t.Fatalf("Start: got %v, want ECONFLICT: the container is not this start's", err)
		}
		if n := count(tk); n != 0 {
			t.Fatalf("containers of the task: %d, want 0", n)
		}
	})
}

// waitEnded polls until container id has exited and returns it.
func waitEnded(t *testing.T, rt *docker.Runtime, id string) task.Container {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := rt.Inspect(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if !c.Running && !c.FinishedAt.IsZero() {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s has not exited within 30s", id[:12])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
