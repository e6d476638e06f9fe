package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// The worker's allowances reach Docker as asked, and what they do not allow is refused with 403
// naming the field before anything reaches Docker.
func TestHostAccessEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/marker", []byte("here"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--allow-bind-mounts", dir, "--allow-cap-add")

	tk := echoTask("--listen", ":7777")
	tk.Binds = []string{dir + "/:/data:ro"}
	tk.CapAdd = []string{"cap_net_admin"}
	run := d.running(t, tk, 30*time.Second)
	info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), run.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	// Docker was handed the source pinned, not its path; the pin is released once the
	// container runs, and the container sees the source.
	if b := info.HostConfig.Binds; len(b) != 1 || !strings.HasPrefix(b[0], hostpath.DefaultDir+"/") || !strings.HasSuffix(b[0], ":/data:ro") {
		t.Errorf("Binds: got %v, want one pin under %s mounted read-only at /data", b, hostpath.DefaultDir)
	} else if _, err := os.Lstat(strings.TrimSuffix(b[0], ":/data:ro")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the pin after the start: got %v, want it released", err)
	}
	if names := containerSees(t, run.ContainerID, "/data"); !slices.Equal(names, []string{"marker"}) {
		t.Errorf("the container's /data: got %v, want [marker]", names)
	}
	if got := []string(info.HostConfig.CapAdd); !slices.Contains(got, "NET_ADMIN") && !slices.Contains(got, "CAP_NET_ADMIN") {
		t.Errorf("CapAdd: got %v, want NET_ADMIN", got)
	}
	if info.HostConfig.Privileged {
		t.Error("Privileged: got true, want false")
	}
	if len(info.Mounts) != 1 || info.Mounts[0].Destination != "/data" || info.Mounts[0].RW {
		t.Errorf("Mounts: got %+v, want one read-only at /data", info.Mounts)
	}

	for _, tt := range []struct {
		bend   func(*task.Task)
		status int
		want   string
	}{
		{func(t *task.Task) { t.Privileged = true }, 403, "Task.Privileged:"},
		{func(t *task.Task) { t.Binds = []string{"/etc:/host-etc:ro"} }, 403, "Task.Binds[0]:"},
		{func(t *task.Task) { t.Binds = []string{dir + "/../../etc:/x"} }, 400, "Task.Binds[0]:"},
		{func(t *task.Task) { t.PidMode = "host" }, 403, "Task.PidMode:"},
		{func(t *task.Task) { t.Devices = []string{"/dev/fuse"} }, 403, "Task.Devices:"},
	} {
		bad := echoTask("--listen", ":7777")
		tt.bend(&bad)
		var e api.ErrorResponse
		code := d.do(t, http.MethodPost, "/tasks", task.Event{ID: uuid.New(), State: task.Running, Task: bad}, &e)
		if code != tt.status || !strings.HasPrefix(e.Message, tt.want) {
			t.Errorf("POST %s: got %d %q, want %d naming %s", tt.want, code, e.Message, tt.status, tt.want)
		}
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 1 {
		t.Errorf("containers: got %d, want only the allowed task's", n)
	}
}

// containerSees returns the names in dir as the running container containerID sees it: read
// through /proc/PID/root of its process, in its own mount namespace.
func containerSees(t *testing.T, containerID, dir string) []string {
	t.Helper()
	info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), containerID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State == nil || info.State.Pid == 0 {
		t.Fatalf("container %s is not running", containerID[:12])
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root%s", info.State.Pid, dir))
	if err != nil {
		t.Fatalf("the container's %s: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
