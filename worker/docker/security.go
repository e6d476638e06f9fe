package docker

import (
	"errors"
	"io/fs"
	"slices"
	"strings"

	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
)

// applyHostAccess sets the host access a task asks for on hc: privileged mode, the network and
// PID modes, added capabilities, devices and bind mounts. It does not decide whether the task may
// have them; the worker checks that with task.Policy.Check before every start. Devices and
// binds are parsed again here, with the very functions that checked them, and handed to Docker
// cleaned; Start then pins each bind source (pinBinds), so that what is mounted is exactly what
// was allowed. It returns an EINVALID error for a field that does not parse (which Check would
// have refused).
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

// pinBinds pins the host path of each of t's bind mounts and points hc's binds at the pins, so
// that what the container mounts is what was checked: the source as the kernel finds it when
// it is pinned, which must lie under a path the policy allows. Links swapped on the path after
// that change nothing. The returned release unpins them: call it once the container has
// started (or failed to), when its own mounts hold the sources.
//
// It returns an EFORBIDDEN error naming the bind when a source leads out of the allowed paths
// or is a device, and an EINVALID one when it does not exist (the Engine would create it,
// following links).
func (r *Runtime) pinBinds(t task.Task, hc *container.HostConfig) (release func(), err error) {
	var pins []*hostpath.Pin
	release = func() {
		for _, p := range pins {
			p.Release()
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	if len(t.Binds) == 0 {
		return release, nil
	}
	pn, err := r.pinner()
	if err != nil {
		return release, err
	}
	for i, s := range t.Binds {
		b, err := task.ParseBind(s)
		if err != nil {
			return release, task.Errorf(task.EINVALID, "Task.Binds[%d]: %v", i, err)
		}
		p, err := pn.Pin(b.HostPath, func(real string) error { return r.opts.Policy.CheckBindTarget(i, b.HostPath, real) })
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return release, task.Errorf(task.EINVALID, "Task.Binds[%d]: host path %q does not exist", i, b.HostPath)
		case task.ErrorCode(err) == task.EFORBIDDEN:
			return release, err
		case errors.Is(err, hostpath.ErrDevice):
			return release, task.Errorf(task.EFORBIDDEN, "Task.Binds[%d]: %v", i, err)
		case errors.Is(err, hostpath.ErrChanged):
			return release, task.Errorf(task.ECONFLICT, "Task.Binds[%d]: %v", i, err)
		case err != nil:
			return release, task.Errorf(task.EINTERNAL, "Task.Binds[%d]: %v", i, err)
		}
		pins = append(pins, p)
		b.HostPath = p.Path()
		hc.Binds[i] = b.String()
	}
	return release, nil
}

// pinner returns the runtime's pinner, made on first use in Options.PinDir. It refuses a pin
// directory that tasks could bind-mount themselves.
func (r *Runtime) pinner() (*hostpath.Pinner, error) {
	r.pinOnce.Do(func() {
		dir := r.opts.PinDir
		if dir == "" {
			dir = hostpath.DefaultDir
		}
		if !slices.Contains(r.opts.Policy.AllowBindMounts, "/") && r.opts.Policy.CheckBindTarget(0, dir, dir) == nil {
			r.pinErr = task.Errorf(task.EINTERNAL, "the pin directory %s lies under a path tasks may bind-mount (--allow-bind-mounts %s)",
				dir, strings.Join(r.opts.Policy.AllowBindMounts, ","))
			return
		}
		r.pins, r.pinErr = hostpath.NewPinner(dir)
		if r.pinErr != nil {
			r.pinErr = task.Errorf(task.EINTERNAL, "pin bind sources: %v", r.pinErr)
		}
	})
	return r.pins, r.pinErr
}
