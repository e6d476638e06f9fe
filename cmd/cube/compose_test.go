package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// examples/compose.yaml starts three workers that keep their tasks: a task runs on each, and a
// worker whose container is replaced takes its task up (the same container, not restarted).
func TestComposeWorkersKeepTheirTasks(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	image := testenv.TestImage("cube-worker")
	testenv.BuildImage(t, image, "Dockerfile", "./cmd/cube", "bin/cube")
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose is not installed: %v", err)
	}
	cluster := "cube-test-" + uuid.NewString()[:8]
	ports := []string{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	env := append(os.Environ(), "CUBE_TOKEN="+testToken, "CUBE_WORKER_IMAGE="+image, "CUBE_CLUSTER="+cluster,
		"CUBE_PORT1="+ports[0], "CUBE_PORT2="+ports[1], "CUBE_PORT3="+ports[2], "CUBE_LOCK_DIR="+lockDir(t))
	compose := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-f", "../../examples/compose.yaml", "-p", cluster}, args...)...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker-compose", "-f", "../../examples/compose.yaml", "-p", cluster, "down", "-v", "--timeout", "5")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose down -v: %v\n%s", err, out)
		}
		for i := 1; i <= 3; i++ {
			testenv.RemoveLabelled(t, docker.LabelWorker+"="+cluster+"-worker"+string(rune('0'+i)))
		}
	})
	compose("up", "-d")

	workers := make([]*daemon, 3)
	tasks := make([]task.Task, 3)
	for i, port := range ports {
		workers[i] = &daemon{url: "http://127.0.0.1:" + port, token: testToken}
		testenv.WaitReady(t, client, workers[i].url, testToken, time.Minute)
		tk := echoTask("--listen", ":7777")
		workers[i].submit(t, tk)
		tasks[i] = workers[i].waitState(t, tk.ID, task.Running, time.Minute)
	}

	// Replace worker2's container: the new one has the same name and state volume.
	compose("up", "-d", "--force-recreate", "--no-deps", "worker2")
	w := workers[1]
	testenv.WaitReady(t, client, w.url, testToken, time.Minute)
	got := w.get(t, tasks[1].ID)
	if got.State != task.Running || got.ContainerID != tasks[1].ContainerID || got.RestartCount != 0 {
		t.Errorf("worker2's task after its container was replaced: state %v container %.12s restarts %d; want Running in %.12s, not restarted",
			got.State, got.ContainerID, got.RestartCount, tasks[1].ContainerID)
	}
	// It drives the task still: a stop goes through.
	w.do(t, "DELETE", "/tasks/"+got.ID.String(), nil, nil)
	w.waitState(t, got.ID, task.Completed, time.Minute)
	for i, w := range workers {
		if i == 1 {
			continue
		}
		if got := w.get(t, tasks[i].ID); got.State != task.Running {
			t.Errorf("worker%d's task: got %v, want Running", i+1, got.State)
		}
	}
}
