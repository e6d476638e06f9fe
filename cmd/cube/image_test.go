package main

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
	"github.com/google/uuid"
)

// The Dockerfile's image of the worker, run with the host's Docker socket, serves the API and
// runs tasks.
func TestWorkerImage(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	tag := testenv.TestImage("cube-worker")
	testenv.BuildImage(t, tag, "Dockerfile", "./cmd/cube", "bin/cube")

	socket := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		socket = strings.TrimPrefix(h, "unix://")
	}
	name := "cube-image-test-" + uuid.NewString()[:8]
	lockDir := t.TempDir() // the host's lock directory, mounted in as the container's /run/cube
	cli := testenv.Docker(t)
	ctx := testenv.Ctx(t, 2*time.Minute)
	created, err := cli.ContainerCreate(ctx,
		&container.Config{
			Image: tag,
			Cmd:   []string{"worker", "--host", "0.0.0.0", "--port", "5556", "--name", name},
			// Listening on every address of its container, the worker needs a token.
			Env:          []string{"CUBE_TOKEN=" + testToken},
			ExposedPorts: nat.PortSet{"5556/tcp": {}},
			Labels:       map[string]string{"cube.test": name},
		},
		&container.HostConfig{
			Binds:        []string{socket + ":/var/run/docker.sock", lockDir + ":/run/cube"},
			PortBindings: nat.PortMap{"5556/tcp": {{HostIP: "127.0.0.1"}}},
		}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testenv.RemoveLabelled(t, "cube.test="+name)
		testenv.RemoveLabelled(t, docker.LabelWorker+"="+name)
	})
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, url: "http://127.0.0.1:" + info.NetworkSettings.Ports["5556/tcp"][0].HostPort, token: testToken}
	if body := testenv.GetWithin(t, d.url+"/healthz", 30*time.Second); !strings.Contains(body, "ok") {
		t.Fatalf("healthz: got %q", body)
	}
	// Ready once it has recovered its tasks and reached the Engine through the mounted socket.
	d.waitReady(t, 30*time.Second)
	// With the lock directory shared, a worker on the host cannot take the containerized
	// worker's name.
	bin, err := cubeBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(testenv.Ctx(t, time.Minute), bin, "worker", "--port", "0", "--name", name, "--lock-dir", lockDir).CombinedOutput()
	if msg := lastLine(string(out)); err == nil || !strings.Contains(msg, "worker name \""+name+"\" is in use on this Docker Engine") {
		t.Errorf("a host worker with the containerized worker's name: got %v, %q; want it refused", err, msg)
	}
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	run := d.running(t, tk, time.Minute)
	if body := testenv.GetWithin(t, "http://127.0.0.1:"+run.HostPorts["7777/tcp"][0].HostPort+"/health", 10*time.Second); body != "ok" {
		t.Errorf("task's published port: got %q, want ok", body)
	}
	if code := d.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	d.waitState(t, tk.ID, task.Completed, time.Minute)
}
