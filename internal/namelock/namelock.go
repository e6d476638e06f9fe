// Package namelock lets one worker at a time use a name on a Docker Engine. A worker holds an
// exclusive flock(2) on a file named for the Engine's ID and the worker's name, in a lock
// directory every worker on the host shares. The kernel releases the lock when the process ends,
// however it ends (kill -9 included), so a stale lock never blocks a restart. Release removes the
// file; one left by a process that died is taken over by the next worker with the name.
//
// It covers workers on one host that share the lock directory: processes of the same user, or
// of root, and workers in containers that mount the host's lock directory. It does not cover
// workers on two hosts that share one Engine over TCP, nor workers whose lock directories
// differ.
package namelock

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Lock is a held claim on a worker name for one Engine.
type Lock struct {
	f    *os.File
	path string
}

// Holder is what a lock file says about the process that holds, or last held, the lock.
type Holder struct {
	PID      int
	Since    time.Time
	Name     string
	EngineID string
	Host     string `json:",omitempty"`
}

// HeldError says that another process holds the name.
type HeldError struct {
	Holder   // as its lock file says; PID 0 when it could not be read
	Name     string
	EngineID string
	Path     string // the lock file
}

func (e *HeldError) Error() string {
	by := "another process"
	if e.Holder.PID > 0 {
		by = fmt.Sprintf("pid %d", e.Holder.PID)
		if e.Holder.Host != "" {
			by += " (host " + e.Holder.Host + ")"
		}
		if !e.Holder.Since.IsZero() {
			by += " since " + e.Holder.Since.UTC().Format(time.RFC3339)
		}
	}
	return fmt.Sprintf("worker name %q is in use on this Docker Engine (ID %s) by %s; give this worker another --name, or stop that one (lock file %s)",
		e.Name, e.EngineID, by, e.Path)
}

// ErrUnsupported is returned where the operating system has no flock(2).
var ErrUnsupported = errors.New("worker name locks are not supported on this operating system")

// DefaultDir returns the lock directory: /run/cube for root (euid 0), else
// $XDG_RUNTIME_DIR/cube when that is set, else cube-UID in the system's temporary directory.
func DefaultDir(getenv func(string) string, euid int) string {
	switch {
	case euid == 0:
		return "/run/cube"
	case getenv("XDG_RUNTIME_DIR") != "":
		return filepath.Join(getenv("XDG_RUNTIME_DIR"), "cube")
	}
	return filepath.Join(os.TempDir(), "cube-"+strconv.Itoa(euid))
}

// Path returns the lock file for the worker name on the Engine with the given ID, in dir. The
// file name is a hash of both, since neither need be a valid file name.
func Path(dir, engineID, name string) string {
	sum := sha256.Sum256([]byte(engineID + "\x00" + name))
	return filepath.Join(dir, "worker-"+hex.EncodeToString(sum[:12])+".lock")
}

// Acquire takes the lock on the worker name for the Engine with the given ID, in dir (made when
// missing), and records the calling process in it. It fails at once, without waiting, with a
// *HeldError when another process holds it; with ErrUnsupported where there is no flock; and
// with an error naming the file when the directory or file cannot be made.
func Acquire(dir, engineID, name string, now time.Time) (*Lock, error) {
	if engineID == "" || name == "" {
		return nil, errors.New("namelock: the Engine ID and the worker name must not be empty")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("worker name lock: %w", err)
	}
	path := Path(dir, engineID, name)
	var f *os.File
	for {
		var err error
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("worker name lock: %w", err)
		}
		held, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("worker name lock %s: %w", path, err)
		}
		if held {
			h := readHolder(f)
			f.Close()
			return nil, &HeldError{Holder: h, Name: name, EngineID: engineID, Path: path}
		}
		// A holder that released the name removed the file between this open and this lock:
		// the lock is on a file no one else can find. Try again with the file at path now.
		if opened, err1 := f.Stat(); err1 == nil {
			if current, err2 := os.Stat(path); err2 == nil && os.SameFile(opened, current) {
				break
			}
		}
		f.Close()
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(Holder{PID: os.Getpid(), Since: now, Name: name, EngineID: engineID, Host: host})
	// One write of the whole record, after the truncate: a reader sees the old record, none,
	// or the new one.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("worker name lock %s: %w", path, err)
	}
	if _, err := f.WriteAt(append(b, '\n'), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("worker name lock %s: %w", path, err)
	}
	return &Lock{f: f, path: path}, nil
}

// readHolder reads who holds the lock. The holder writes its record just after it takes the
// lock, so an empty file is read again for a moment before giving up.
func readHolder(f *os.File) Holder {
	var h Holder
	for range 20 {
		b := make([]byte, 4096)
		n, _ := f.ReadAt(b, 0)
		if n > 0 && json.Unmarshal(b[:n], &h) == nil && h.PID > 0 {
			return h
		}
		time.Sleep(5 * time.Millisecond)
	}
	return Holder{}
}

// Path returns the lock file.
func (l *Lock) Path() string { return l.path }

// Release gives the name up and removes the lock file. (A process that dies without Release
// leaves the file; the next Acquire takes it over.)
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Removed while still locked, so that no one locks the file after it is gone: whoever
	// opened it before then finds, once it has the lock, that the file at the path is not the
	// one it locked, and tries again.
	err := os.Remove(l.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil // removed by hand: nothing to clean up
	}
	if uerr := unlock(l.f); err == nil {
		err = uerr
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
