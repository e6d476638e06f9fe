// Package hostpath resolves host paths and pins them for bind mounts, so that what a container
// mounts is the very file or directory that was checked, whatever happens to the path after.
//
// A path is a name that anyone who can write to a directory on it may change: a task with a
// writable bind mount can replace a directory inside it with a symbolic link to /. Checking the
// path and then handing it to the Docker Engine leaves a window between the two in which the
// name can come to mean something else. A Pin closes it: the path is opened once, the kernel
// says where the opened object really is (the check is made on that), and the object itself is
// bind-mounted at a new path in a directory only root can reach; the Engine is given that path.
// Nothing a task can do changes what a pin's path names.
//
// The package works on Linux, for a process in the same mount namespace as the Docker Engine
// (the worker running on the host, as root).
package hostpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Resolve returns the absolute path p with every symbolic link on it resolved, as the host sees
// it now. The part of p that does not exist yet is kept as written, cleaned. It fails when a
// link on p leads nowhere (a dangling link names a path that does not exist yet, somewhere
// else), or when p cannot be looked up.
func Resolve(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is not absolute", p)
	}
	p = filepath.Clean(p)
	rest := ""
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if _, lerr := os.Lstat(p); lerr == nil {
			return "", fmt.Errorf("the symbolic link %q leads nowhere", p)
		}
		if p == "/" {
			return "", err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = filepath.Dir(p)
	}
}

// Pinner makes Pins in a directory of its own, which only root can reach. Make one with
// NewPinner; its methods are safe for concurrent use.
type Pinner struct {
	dir string
}

// DefaultDir is where pinners make their directories unless told otherwise.
const DefaultDir = "/run/cube/pins"

// NewPinner makes a pinner whose pins live in a new directory under base (DefaultDir when
// empty), and removes what pinners of processes that no longer run left there (a process
// killed while it held a pin). base must not be a path a task may bind-mount. It fails when the
// directory cannot be made, or when base, resolved, is not base itself (a symbolic link on it
// could lead the pins anywhere).
func NewPinner(base string) (*Pinner, error) {
	if base == "" {
		base = DefaultDir
	}
	base = filepath.Clean(base)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	if err := os.Chmod(base, 0o700); err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	if r, err := filepath.EvalSymlinks(base); err != nil || r != base {
		return nil, fmt.Errorf("pin directory %s: must be a real directory, not reached through a symbolic link (resolves to %q, %v)", base, r, err)
	}
	cleanStale(base)
	dir, err := os.MkdirTemp(base, strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	return &Pinner{dir: dir}, nil
}

// Dir returns the directory the pinner's pins live in.
func (pn *Pinner) Dir() string { return pn.dir }

// Close removes the pinner's directory. Pins not yet released are released first.
func (pn *Pinner) Close() error {
	return removePins(pn.dir)
}

// cleanStale removes the directories under base of pinners whose process is gone.
func cleanStale(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		pidText, _, ok := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || alive(pid) {
			continue
		}
		removePins(filepath.Join(base, e.Name()))
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removePins detaches the pins left in dir and removes it.
func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		unix.Unmount(p, unix.MNT_DETACH)
		os.Remove(p)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// A Pin is a host file or directory mounted at a path of the pinner's own, for as long as it
// is held. Release it once the container that binds it has started: the container keeps its
// own mount.
type Pin struct {
	path string // where the object is mounted
	real string // where the object was on the host when it was pinned
}

// Path returns the path the pinned object is mounted at: what to hand the Docker Engine.
func (p *Pin) Path() string { return p.path }

// Real returns the path the pinned object had on the host, every link resolved, when it was
// pinned: what the check was made on.
func (p *Pin) Real() string { return p.real }

// Release unmounts the pin and removes its path. Mounts made from it stay.
func (p *Pin) Release() error {
	err := unix.Unmount(p.path, unix.MNT_DETACH)
	if rerr := os.Remove(p.path); err == nil {
		err = rerr
	}
	return err
}

// The errors Pin returns, wrapped, for a device and for a path that changed while it was
// being pinned.
var (
	ErrDevice  = errors.New("is a device, which is mapped with Devices, not bound")
	ErrChanged = errors.New("changed while it was being checked")
)

// Pin opens the host path hostPath, following its links, and calls check with the path the
// opened object really has on the host (from the kernel, not from the links as read before).
// When check returns nil, Pin mounts the object at a new path of its own and returns the Pin;
// otherwise it returns check's error. It fails, too, when hostPath does not exist (an error
// for which errors.Is(err, fs.ErrNotExist) holds), names a device (ErrDevice), or is moved or
// removed while it is being pinned (ErrChanged).
func (pn *Pinner) Pin(hostPath string, check func(real string) error) (*Pin, error) {
	fd, err := unix.Open(hostPath, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: hostPath, Err: err}
	}
	defer unix.Close(fd)
	self := "/proc/self/fd/" + strconv.Itoa(fd)
	real, err := os.Readlink(self)
	if err != nil {
		return nil, fmt.Errorf("host path %q: where it leads: %w", hostPath, err)
	}
	var opened, named unix.Stat_t
	if err := unix.Fstat(fd, &opened); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	// The kernel's name for the object is a path as it was; make sure the object is still
	// there (not removed, not moved meanwhile) before the check trusts the name.
	if err := unix.Lstat(real, &named); err != nil || named.Dev != opened.Dev || named.Ino != opened.Ino {
		return nil, fmt.Errorf("host path %q %w", hostPath, ErrChanged)
	}
	mode := opened.Mode & unix.S_IFMT
	if mode == unix.S_IFCHR || mode == unix.S_IFBLK {
		return nil, fmt.Errorf("host path %q %w", hostPath, ErrDevice)
	}
	if err := check(real); err != nil {
		return nil, err
	}
	target, err := pn.mountPoint(mode == unix.S_IFDIR)
	if err != nil {
		return nil, err
	}
	// MS_REC, as Docker's own bind mounts: mounts under the object come along.
	if err := unix.Mount(self, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		os.Remove(target)
		return nil, fmt.Errorf("pin host path %q: mount: %w", hostPath, err)
	}
	return &Pin{path: target, real: real}, nil
}

// mountPoint makes a new, empty directory (or file) to mount a pin on.
func (pn *Pinner) mountPoint(dir bool) (string, error) {
	if dir {
		p, err := os.MkdirTemp(pn.dir, "d")
		if err != nil {
			return "", fmt.Errorf("pin: %w", err)
		}
		return p, nil
	}
	f, err := os.CreateTemp(pn.dir, "f")
	if err != nil {
		return "", fmt.Errorf("pin: %w", err)
	}
	f.Close()
	return f.Name(), nil
}
