package task

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Policy says which kinds of host access a worker grants its tasks. The zero Policy grants none:
// no privileged containers, no host network or PID namespace, no added capabilities, no devices
// and no bind mounts. A container that has any of these can usually take over its machine, so
// each is an explicit choice of whoever starts the worker.
type Policy struct {
	AllowPrivileged  bool // Task.Privileged
	AllowHostNetwork bool // Task.NetworkMode "host"
	AllowHostPID     bool // Task.PidMode "host"
	AllowCapAdd      bool // Task.CapAdd, "ALL" included
	AllowDevices     bool // Task.Devices
	// AllowBindMounts lists the host path prefixes under which Task.Binds may mount. A prefix
	// matches whole path elements: "/srv/data" allows "/srv/data" and "/srv/data/x", not
	// "/srv/database". "/" allows every path. Empty allows no bind mount.
	AllowBindMounts []string
	// Resolve, when set, returns a host path with every symbolic link on it resolved, as the
	// host sees it now (the worker sets it to internal/hostpath.Resolve). Bind sources and the
	// prefixes are then compared resolved, so that a link under a prefix cannot lead out of
	// it. Nil compares the paths as written.
	Resolve func(hostPath string) (string, error)
}

// Check checks the host access t asks for against p. It first checks the syntax of the
// host-access fields (NetworkMode, PidMode, CapAdd, Devices, Binds) and returns an EINVALID
// *Error naming the first that is malformed; then it returns an EFORBIDDEN *Error naming the
// first field that asks for more than p allows, and the worker flag that would allow it. It
// returns nil when t may run.
//
// Bind mounts are checked on their cleaned host path, so ".." cannot climb out of an allowed
// prefix, and, with p.Resolve, on where that path leads on the host, every symbolic link
// resolved, so that a link cannot lead out either. What is resolved now may change before the
// container mounts it: the runtime pins each source and checks it again with CheckBindTarget.
func (p Policy) Check(t Task) error {
	if err := t.validateHostAccess(); err != nil {
		return err
	}
	if t.Privileged && !p.AllowPrivileged {
		return forbidden("Privileged", "privileged containers are not allowed on this worker (start it with --allow-privileged)")
	}
	if t.NetworkMode == NetworkHost && !p.AllowHostNetwork {
		return forbidden("NetworkMode", "the host network is not allowed on this worker (start it with --allow-host-network)")
	}
	if t.PidMode == PidHost && !p.AllowHostPID {
		return forbidden("PidMode", "the host PID namespace is not allowed on this worker (start it with --allow-host-pid)")
	}
	if len(t.CapAdd) > 0 && !p.AllowCapAdd {
		return forbidden("CapAdd", "added capabilities are not allowed on this worker (start it with --allow-cap-add)")
	}
	if len(t.Devices) > 0 && !p.AllowDevices {
		return forbidden("Devices", "host devices are not allowed on this worker (start it with --allow-devices)")
	}
	for i, s := range t.Binds {
		b, _ := ParseBind(s) // valid: checked above
		target := b.HostPath
		if p.Resolve != nil && len(p.AllowBindMounts) > 0 {
			r, err := p.Resolve(b.HostPath)
			if err != nil {
				return forbidden(fmt.Sprintf("Binds[%d]", i), "host path %q cannot be resolved on this host: %v", b.HostPath, err)
			}
			target = r
		}
		if err := p.CheckBindTarget(i, b.HostPath, target); err != nil {
			return err
		}
	}
	return nil
}

// CheckBindTarget checks that the host path of t.Binds[i], hostPath, which leads to target on
// the host (every symbolic link resolved), lies under one of p's prefixes, each resolved with
// p.Resolve when it is set. It returns an EFORBIDDEN *Error naming the field, or nil. The
// runtime calls it with the path the kernel gives for the source it has pinned.
func (p Policy) CheckBindTarget(i int, hostPath, target string) error {
	field := fmt.Sprintf("Binds[%d]", i)
	if len(p.AllowBindMounts) == 0 {
		return forbidden(field, "bind mounts are not allowed on this worker (start it with --allow-bind-mounts PATH_PREFIX)")
	}
	if p.allowsBind(target) {
		return nil
	}
	if target != hostPath {
		return forbidden(field, "host path %q leads to %q on this host, which is not under a path this worker allows to mount (%s)",
			hostPath, target, strings.Join(p.AllowBindMounts, ", "))
	}
	return forbidden(field, "host path %q is not under a path this worker allows to mount (%s)",
		hostPath, strings.Join(p.AllowBindMounts, ", "))
}

// allowsBind reports whether the cleaned absolute host path lies under one of p's prefixes,
// each resolved with p.Resolve when it is set (a prefix that cannot be resolved allows nothing).
func (p Policy) allowsBind(hostPath string) bool {
	if !path.IsAbs(hostPath) || path.Clean(hostPath) != hostPath {
		return false
	}
	for _, prefix := range p.AllowBindMounts {
		if prefix == "" || !path.IsAbs(prefix) {
			continue // CleanBindPrefix refuses these; never let one match by accident
		}
		prefix = path.Clean(prefix)
		if p.Resolve != nil && prefix != "/" {
			r, err := p.Resolve(prefix)
			if err != nil {
				continue
			}
			prefix = r
		}
		if prefix == "/" || hostPath == prefix || strings.HasPrefix(hostPath, prefix+"/") {
			return true
		}
	}
	return false
}

// CleanBindPrefix checks a prefix for Policy.AllowBindMounts and returns it cleaned. It fails
// unless the prefix is an absolute path without ".." elements and without a colon.
func CleanBindPrefix(prefix string) (string, error) {
	if err := checkHostPath(prefix); err != nil {
		return "", fmt.Errorf("bind mount prefix %q: %v", prefix, err)
	}
	return path.Clean(prefix), nil
}

// The network and PID modes a task may ask for.
const (
	NetworkDefault = ""
	NetworkBridge  = "bridge"
	NetworkHost    = "host"
	NetworkNone    = "none"
	PidHost        = "host"
)

// Bind is a parsed bind mount, "HOST:CONTAINER[:ro|rw]".
type Bind struct {
	HostPath      string // absolute and cleaned
	ContainerPath string // absolute and cleaned
	ReadOnly      bool
}

// String returns the bind in Docker's syntax.
func (b Bind) String() string {
	mode := "rw"
	if b.ReadOnly {
		mode = "ro"
	}
	return b.HostPath + ":" + b.ContainerPath + ":" + mode
}

// ParseBind parses a bind mount "HOST:CONTAINER[:ro|rw]". Both paths must be absolute, must not
// contain ".." elements or colons, and come back cleaned; the container path must not be "/".
// The error says what is wrong.
func ParseBind(s string) (Bind, error) {
	parts := strings.Split(s, ":")
	var b Bind
	switch len(parts) {
	case 2:
	case 3:
		switch parts[2] {
		case "ro":
			b.ReadOnly = true
		case "rw":
		default:
			return Bind{}, fmt.Errorf("%q: the mode %q must be ro or rw", s, parts[2])
		}
	default:
		return Bind{}, fmt.Errorf("%q must have the form /host/path:/container/path[:ro|rw]", s)
	}
	if err := checkHostPath(parts[0]); err != nil {
		return Bind{}, fmt.Errorf("%q: host path %v", s, err)
	}
	if err := checkHostPath(parts[1]); err != nil {
		return Bind{}, fmt.Errorf("%q: container path %v", s, err)
	}
	b.HostPath, b.ContainerPath = path.Clean(parts[0]), path.Clean(parts[1])
	if b.ContainerPath == "/" {
		return Bind{}, fmt.Errorf("%q: the container path must not be /", s)
	}
	return b, nil
}

// checkHostPath checks that p is an absolute path with no ".." element, no NUL, and no colon
// (which Docker's bind syntax would split on). The error completes "path …".
func checkHostPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("is empty")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must be absolute", p)
	case strings.ContainsAny(p, ":\x00"):
		return fmt.Errorf("%q must not contain a colon or a NUL byte", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return fmt.Errorf("%q must not contain \"..\"", p)
	}
	return nil
}

// Device is a parsed device mapping, "/dev/HOST[:/CONTAINER][:PERMISSIONS]".
type Device struct {
	HostPath      string // cleaned, under /dev/
	ContainerPath string // cleaned; the host path when not given
	Permissions   string // cgroup permissions, some of r, w and m; "rwm" when not given
}

// ParseDevice parses a device mapping "/dev/HOST[:/CONTAINER][:PERMISSIONS]" the way Docker's
// --device flag does: the host path must lie under /dev/, the container path must be absolute,
// and the permissions are some of r, w and m, each at most once. The error says what is wrong.
func ParseDevice(s string) (Device, error) {
	parts := strings.Split(s, ":")
	d := Device{Permissions: "rwm"}
	switch len(parts) {
	case 1:
	case 2:
		if validDevicePerms(parts[1]) {
			d.Permissions = parts[1]
		} else {
			d.ContainerPath = parts[1]
		}
	case 3:
		if !validDevicePerms(parts[2]) {
			return Device{}, fmt.Errorf("%q: permissions %q must be some of r, w and m", s, parts[2])
		}
		d.ContainerPath, d.Permissions = parts[1], parts[2]
	default:
		return Device{}, fmt.Errorf("%q must have the form /dev/HOST[:/CONTAINER][:rwm]", s)
	}
	if err := checkHostPath(parts[0]); err != nil {
		return Device{}, fmt.Errorf("%q: host path %v", s, err)
	}
	d.HostPath = path.Clean(parts[0])
	if !strings.HasPrefix(d.HostPath, "/dev/") {
		return Device{}, fmt.Errorf("%q: host path must be a device under /dev/", s)
	}
	if d.ContainerPath == "" {
		d.ContainerPath = d.HostPath
	} else {
		if err := checkHostPath(d.ContainerPath); err != nil {
			return Device{}, fmt.Errorf("%q: container path %v", s, err)
		}
		d.ContainerPath = path.Clean(d.ContainerPath)
	}
	return d, nil
}

func validDevicePerms(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for i, c := range s {
		if !strings.ContainsRune("rwm", c) || strings.ContainsRune(s[i+1:], c) {
			return false
		}
	}
	return true
}

// capabilities are the Linux capabilities, without their CAP_ prefix.
var capabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// NormalizeCapability returns the capability name s (such as "NET_ADMIN", "cap_net_admin" or
// "ALL") in upper case without the CAP_ prefix, the form every Docker Engine accepts, and false
// when s names no Linux capability.
func NormalizeCapability(s string) (string, bool) {
	c := strings.TrimPrefix(strings.ToUpper(s), "CAP_")
	if c == "ALL" || slices.Contains(capabilities, c) {
		return c, true
	}
	return "", false
}

// validateHostAccess checks the syntax of the host-access fields, and returns an EINVALID *Error
// naming the first that is malformed.
func (t Task) validateHostAccess() error {
	switch t.NetworkMode {
	case NetworkDefault, NetworkBridge:
	case NetworkHost, NetworkNone:
		// Docker publishes no port in these modes; say so instead of dropping them quietly.
		if len(t.ExposedPorts) > 0 || len(t.PortBindings) > 0 {
			return invalid("NetworkMode", "%q publishes no ports; remove ExposedPorts and PortBindings", t.NetworkMode)
		}
	default:
		return invalid("NetworkMode", "%q is not one of \"bridge\", \"host\", \"none\"", t.NetworkMode)
	}
	switch t.PidMode {
	case "", PidHost:
	default:
		return invalid("PidMode", "%q is not \"host\" (or empty for the container's own)", t.PidMode)
	}
	for i, c := range t.CapAdd {
		if _, ok := NormalizeCapability(c); !ok {
			return invalid(fmt.Sprintf("CapAdd[%d]", i), "%q is not a Linux capability (such as NET_ADMIN or CAP_NET_ADMIN)", c)
		}
	}
	for i, d := range t.Devices {
		if _, err := ParseDevice(d); err != nil {
			return invalid(fmt.Sprintf("Devices[%d]", i), "%v", err)
		}
	}
	targets := make(map[string]int, len(t.Binds))
	for i, s := range t.Binds {
		b, err := ParseBind(s)
		if err != nil {
			return invalid(fmt.Sprintf("Binds[%d]", i), "%v", err)
		}
		// What the Engine or the container runtime would refuse at the start is refused here.
		if j, ok := targets[b.ContainerPath]; ok {
			return invalid(fmt.Sprintf("Binds[%d]", i), "%q: the container path %s is bound already by Binds[%d]", s, b.ContainerPath, j)
		}
		targets[b.ContainerPath] = i
		for _, kernel := range []string{"/proc", "/sys"} {
			if b.ContainerPath == kernel || strings.HasPrefix(b.ContainerPath, kernel+"/") {
				return invalid(fmt.Sprintf("Binds[%d]", i), "%q: the container path must not be in %s, which the container runtime mounts itself", s, kernel)
			}
		}
	}
	return nil
}

func forbidden(field, format string, args ...any) *Error {
	return Errorf(EFORBIDDEN, "Task.%s: %s", field, fmt.Sprintf(format, args...))
}
