package api

import (
	"net/http"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
)

// newPolicyHarness is newHarness with a worker that grants p.
func newPolicyHarness(tb testing.TB, p task.Policy) *harness {
	tb.Helper()
	return newHarnessWith(tb, testworker.Options{Config: worker.Config{Policy: p}})
}

// Each kind of host access is refused with 403 naming the field on a worker that does not grant
// it, and nothing is created; malformed host-access fields are 400 naming the field.
func TestHostAccessThroughTheAPI(t *testing.T) {
	noPorts := func(e event) { delete(e.task(), "ExposedPorts"); delete(e.task(), "PortBindings") }
	tests := []struct {
		name   string
		bend   func(event)
		status int
		parts  []string
	}{
		{"privileged", func(e event) { e.task()["Privileged"] = true }, 403, []string{"Task.Privileged:", "--allow-privileged"}},
		{"host network", func(e event) { noPorts(e); e.task()["NetworkMode"] = "host" }, 403, []string{"Task.NetworkMode:", "--allow-host-network"}},
		{"host pid", func(e event) { e.task()["PidMode"] = "host" }, 403, []string{"Task.PidMode:", "--allow-host-pid"}},
		{"capabilities", func(e event) { e.task()["CapAdd"] = []string{"NET_ADMIN"} }, 403, []string{"Task.CapAdd:", "--allow-cap-add"}},
		{"devices", func(e event) { e.task()["Devices"] = []string{"/dev/fuse"} }, 403, []string{"Task.Devices:", "--allow-devices"}},
		{"bind mounts", func(e event) { e.task()["Binds"] = []string{"/srv/data:/data:ro"} }, 403, []string{"Task.Binds[0]:", "--allow-bind-mounts"}},
		{"bad network mode", func(e event) { e.task()["NetworkMode"] = "container:x" }, 400, []string{"Task.NetworkMode:"}},
		{"bad pid mode", func(e event) { e.task()["PidMode"] = "container:x" }, 400, []string{"Task.PidMode:"}},
		{"bad capability", func(e event) { e.task()["CapAdd"] = []string{"NET_WIZARD"} }, 400, []string{"Task.CapAdd[0]:"}},
		{"bad device", func(e event) { e.task()["Devices"] = []string{"/etc/shadow"} }, 400, []string{"Task.Devices[0]:"}},
		{"bind climbing out", func(e event) { e.task()["Binds"] = []string{"/srv/data/../../etc:/etc"} }, 400, []string{"Task.Binds[0]:", `".."`}},
		{"bind to a volume name", func(e event) { e.task()["Binds"] = []string{"data:/data"} }, 400, []string{"Task.Binds[0]:"}},
		{"wrong type", func(e event) { e.task()["Privileged"] = "yes" }, 400, []string{"Task.Privileged:"}},
	}
	h := newPolicyHarness(t, task.Policy{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, h.do(t, http.MethodPost, "/tasks", bent(t, tt.bend)), tt.status, tt.parts...)
			h.wantNothingCreated(t)
		})
	}
}

// With the allowances, the same asks are accepted and reach the runtime as asked.
func TestHostAccessAllowedThroughTheAPI(t *testing.T) {
	h := newPolicyHarness(t, task.Policy{
		AllowPrivileged: true, AllowHostPID: true, AllowCapAdd: true, AllowDevices: true,
		AllowBindMounts: []string{"/srv/data"},
	})
	e := newEvent()
	e.task()["Privileged"] = true
	e.task()["PidMode"] = "host"
	e.task()["CapAdd"] = []string{"NET_ADMIN"}
	e.task()["Devices"] = []string{"/dev/fuse"}
	e.task()["Binds"] = []string{"/srv/data/app:/data:ro"}
	created := h.post(t, e)
	h.waitState(t, created.ID, task.Running)
	starts := h.rt.Starts()
	if len(starts) != 1 || !starts[0].Privileged || starts[0].PidMode != "host" || len(starts[0].Binds) != 1 {
		t.Fatalf("runtime starts: got %+v, want the task with its host access", starts)
	}
	// A bind outside the allowed prefix is still refused.
	e = newEvent()
	e.task()["Binds"] = []string{"/srv/database:/db"}
	wantError(t, h.do(t, http.MethodPost, "/tasks", e.json(t)), http.StatusForbidden, "Task.Binds[0]:", `"/srv/database"`)
}
