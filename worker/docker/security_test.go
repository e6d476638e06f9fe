package docker

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/strslice"
)

func TestApplyHostAccess(t *testing.T) {
	tests := []struct {
		name string
		t    task.Task
		want container.HostConfig
	}{
		{"nothing asked", task.Task{}, container.HostConfig{}},
		{"bridge stays Docker's default", task.Task{NetworkMode: "bridge"}, container.HostConfig{NetworkMode: "bridge"}},
		{"privileged", task.Task{Privileged: true}, container.HostConfig{Privileged: true}},
		{"host network", task.Task{NetworkMode: "host"}, container.HostConfig{NetworkMode: "host"}},
		{"no network", task.Task{NetworkMode: "none"}, container.HostConfig{NetworkMode: "none"}},
		{"host pid", task.Task{PidMode: "host"}, container.HostConfig{PidMode: "host"}},
		{"capabilities normalized", task.Task{CapAdd: []string{"NET_ADMIN", "cap_sys_time", "CAP_BPF"}},
			container.HostConfig{CapAdd: strslice.StrSlice{"NET_ADMIN", "SYS_TIME", "BPF"}}},
		{"devices", task.Task{Devices: []string{"/dev/fuse", "/dev/sda:/dev/xvda:r", "/dev//snd/:rw"}},
			container.HostConfig{Resources: container.Resources{Devices: []container.DeviceMapping{
				{PathOnHost: "/dev/fuse", PathInContainer: "/dev/fuse", CgroupPermissions: "rwm"},
				{PathOnHost: "/dev/sda", PathInContainer: "/dev/xvda", CgroupPermissions: "r"},
				{PathOnHost: "/dev/snd", PathInContainer: "/dev/snd", CgroupPermissions: "rw"},
			}}}},
		{"binds cleaned, mode explicit", task.Task{Binds: []string{"/srv/data:/data", "/srv//logs/./app/:/logs/:ro"}},
			container.HostConfig{Binds: []string{"/srv/data:/data:rw", "/srv/logs/app:/logs:ro"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hc container.HostConfig
			if err := applyHostAccess(tt.t, &hc); err != nil {
				t.Fatalf("applyHostAccess: %v", err)
			}
			if !reflect.DeepEqual(hc, tt.want) {
				t.Errorf("got %+v\nwant %+v", hc, tt.want)
			}
		})
	}
}

// What the policy never saw is still not handed to Docker raw.
func TestApplyHostAccessRefusesMalformed(t *testing.T) {
	for _, tk := range []task.Task{
		{CapAdd: []string{"NET_WIZARD"}},
		{Devices: []string{"/etc/shadow"}},
		{Binds: []string{"/srv/../etc:/etc"}},
		{Binds: []string{"data:/data"}},
	} {
		var hc container.HostConfig
		err := applyHostAccess(tk, &hc)
		if task.ErrorCode(err) != task.EINVALID || !strings.HasPrefix(err.Error(), "Task.") {
			t.Errorf("applyHostAccess(%+v): got %v, want an EINVALID error naming the field", tk, err)
		}
	}
}

// applyHostAccess only adds to the HostConfig that containerConfig has built.
func TestApplyHostAccessKeepsOtherSettings(t *testing.T) {
	hc := container.HostConfig{
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Resources:     container.Resources{Memory: 64 << 20},
	}
	if err := applyHostAccess(task.Task{Devices: []string{"/dev/fuse"}}, &hc); err != nil {
		t.Fatal(err)
	}
	if hc.Memory != 64<<20 || hc.RestartPolicy.Name != container.RestartPolicyDisabled || len(hc.Devices) != 1 {
		t.Errorf("got %+v, want the memory limit and restart policy kept and one device added", hc)
	}
}
