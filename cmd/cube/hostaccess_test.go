package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// The worker's allowances reach Docker as asked, and what they do not allow is refused with 403
// naming the field before anything reaches Docker.
func TestHostAccessEndToEnd(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, "--allow-bind-mounts", dir, "--allow-cap-add")

	tk := echoTask("--listen", ":7777")
	tk.Binds = []string{dir + "/:/data:ro"}
	tk.CapAdd = []string{"cap_net_admin"}
	d.submit(t, tk)
	run := d.waitState(t, tk.ID, task.Running, 30*time.Second)
	info, err := testenv.Docker(t).ContainerInspect(testenv.Ctx(t, 10*time.Second), run.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.HostConfig.Binds, []string{dir + ":/data:ro"}; !slices.Equal(got, want) {
		t.Errorf("Binds: got %v, want %v", got, want)
	}
	if got := []string(info.HostConfig.CapAdd); !slices.Contains(got, "NET_ADMIN") && !slices.Contains(got, "CAP_NET_ADMIN") {
		t.Errorf("CapAdd: got %v, want NET_ADMIN", got)
	}
	if info.HostConfig.Privileged {
		t.Error("Privileged: got true, want false")
	}
	if len(info.Mounts) != 1 || info.Mounts[0].Source != dir || info.Mounts[0].Destination != "/data" || info.Mounts[0].RW {
		t.Errorf("Mounts: got %+v, want %s read-only at /data", info.Mounts, dir)
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
