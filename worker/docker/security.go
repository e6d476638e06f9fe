package docker

import (
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
)

// applyHostAccess sets the host access a task asks for on hc: privileged mode, the network and
// PID modes, added capabilities, devices and bind mounts. It does not decide whether the task may
// have them; the worker checks that with task.Policy.Check before a task is accepted. Devices
// and binds are parsed again here, with the very functions that checked them, and handed to
// Docker cleaned, so that what is mounted is exactly what was allowed. It returns an EINVALID
// error for a field that does not parse (which Check would have refused).
func applyHostAccess(t task.Task, hc *container.HostConfig) error {
	hc.Privileged = t.Privileged
	if t.NetworkMode != "" {
		hc.NetworkMode = container.NetworkMode(t.NetworkMode)
	}
	if t.PidMode != "" {
		hc.PidMode = container.PidMode(t.PidMode)
	}
	for i, c := range t.CapAdd {
		name, ok := task.NormalizeCapability(c)
		if !ok {
			return task.Errorf(task.EINVALID, "Task.CapAdd[%d]: %q is not a Linux capability", i, c)
		}
		hc.CapAdd = append(hc.CapAdd, name)
	}
	for i, s := range t.Devices {
		d, err := task.ParseDevice(s)
		if err != nil {
			return task.Errorf(task.EINVALID, "Task.Devices[%d]: %v", i, err)
		}
		hc.Devices = append(hc.Devices, container.DeviceMapping{
			PathOnHost:        d.HostPath,
			PathInContainer:   d.ContainerPath,
			CgroupPermissions: d.Permissions,
		})
	}
	for i, s := range t.Binds {
		b, err := task.ParseBind(s)
		if err != nil {
			return task.Errorf(task.EINVALID, "Task.Binds[%d]: %v", i, err)
		}
		hc.Binds = append(hc.Binds, b.String())
	}
	return nil
}
