package hostpath

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tree makes, under a new temporary directory, allowed/ with a directory, a file and links
// pointing inside and outside it, and outside/ with a secret. It returns the directory,
// resolved.
func tree(t *testing.T) string {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"allowed/dir/sub", "outside"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{"allowed/dir/file": "inside", "outside/secret": "outside"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"allowed/in":       "dir",                 // relative, inside
		"allowed/abs":      root + "/allowed/dir", // absolute, inside
		"allowed/out":      "../outside",          // relative, outside
		"allowed/etc":      "/etc",                // absolute, outside
		"allowed/dir/up":   "..",                  // a link to its parent: still inside
		"allowed/dir/up2":  "../..",               // out
		"allowed/dangling": "/nonexistent-cube-test/x",
		"allowed/chain":    "in/up/out",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolve(t *testing.T) {
	root := tree(t)
	tests := []struct{ in, want string }{
		{"/allowed/dir", "/allowed/dir"},
		{"/allowed/in", "/allowed/dir"},
		{"/allowed/in/file", "/allowed/dir/file"},
		{"/allowed/abs/sub", "/allowed/dir/sub"},
		{"/allowed/out", "/outside"},
		{"/allowed/out/secret", "/outside/secret"},
		{"/allowed/dir/up/dir/up", "/allowed"},
		{"/allowed/dir/up2", ""},
		{"/allowed/chain/secret", "/outside/secret"},
		{"/allowed/in/new/deeper", "/allowed/dir/new/deeper"}, // not there yet: kept as written
		{"/allowed/out/new", "/outside/new"},
	}
	for _, tt := range tests {
		got, err := Resolve(root + tt.in)
		want := root + tt.want
		if err != nil || got != want {
			t.Errorf("Resolve(%q): got %q, %v; want %q", tt.in, got, err, want)
		}
	}
	if got, err := Resolve(root + "/allowed/etc/hostname"); err != nil || got != "/etc/hostname" {
		t.Errorf("Resolve(a link to /etc, then hostname): got %q, %v; want /etc/hostname", got, err)
	}
	for _, in := range []string{root + "/allowed/dangling", root + "/allowed/dangling/below", "relative/path"} {
		if got, err := Resolve(in); err == nil {
			t.Errorf("Resolve(%q): got %q, nil; want an error", in, got)
		}
	}
}

func newPinner(t *testing.T) *Pinner {
	t.Helper()
	pn, err := NewPinner(filepath.Join(t.TempDir(), "pins"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pn.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return pn
}

func accept(string) error { return nil }

// A pin mounts the object the path led to, checked on its real path; what happens to the path
// afterwards does not change what the pin holds.
func TestPin(t *testing.T) {
	root := tree(t)
	pn := newPinner(t)
	if fi, err := os.Stat(pn.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("pin directory: got %v, %v; want mode 0700", fi, err)
	}
	var checked string
	p, err := pn.Pin(root+"/allowed/in", func(real string) error { checked = real; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if checked != root+"/allowed/dir" || p.Real() != checked {
		t.Errorf("checked real path: got %q (Real %q), want %q", checked, p.Real(), root+"/allowed/dir")
	}
	if !strings.HasPrefix(p.Path(), pn.Dir()+"/") {
		t.Errorf("Path: got %q, want it under %q", p.Path(), pn.Dir())
	}
	// Swap the directory for a link to the outside: the pin still holds the directory.
	if err := os.Rename(root+"/allowed/dir", root+"/allowed/moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", root+"/allowed/dir"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p.Path() + "/file"); err != nil || string(b) != "inside" {
		t.Errorf("pinned file: got %q, %v; want inside", b, err)
	}
	if _, err := os.Stat(p.Path() + "/secret"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the outside through the pin: got %v, want not to exist", err)
	}
	if err := p.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := os.Lstat(p.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Release, the pin's path: got %v, want it gone", err)
	}
	if b, err := os.ReadFile(root + "/allowed/moved/file"); err != nil || string(b) != "inside" {
		t.Errorf("after Release, the pinned directory: got %q, %v; want it untouched", b, err)
	}

	// A file is pinned on a file.
	f, err := pn.Pin(root+"/allowed/moved/file", accept)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(f.Path()); err != nil || string(b) != "inside" {
		t.Errorf("pinned file: got %q, %v; want inside", b, err)
	}
	f.Release()
}

func TestPinRefuses(t *testing.T) {
	root := tree(t)
	pn := newPinner(t)
	outside := errors.New("outside")
	check := func(real string) error {
		if !strings.HasPrefix(real, root+"/allowed/") {
			return outside
		}
		return nil
	}
	for _, in := range []string{"/allowed/out", "/allowed/out/secret", "/allowed/chain", "/allowed/dir/up2", "/allowed/etc"} {
		if p, err := pn.Pin(root+in, check); !errors.Is(err, outside) {
			t.Errorf("Pin(%q): got %v, %v; want the check's error", in, p, err)
		}
	}
	if _, err := pn.Pin(root+"/allowed/nothing", accept); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Pin(a path that does not exist): got %v, want fs.ErrNotExist", err)
	}
	if _, err := pn.Pin(root+"/allowed/dangling", accept); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Pin(a dangling link): got %v, want fs.ErrNotExist", err)
	}
	if _, err := pn.Pin("/dev/null", accept); !errors.Is(err, ErrDevice) {
		t.Errorf("Pin(/dev/null): got %v, want a device refused", err)
	}
	if entries, _ := os.ReadDir(pn.Dir()); len(entries) != 0 {
		t.Errorf("pin directory after refusals: got %d entries, want none", len(entries))
	}
}

// Pinning while another goroutine swaps a directory for a link to the outside, over and over:
// every pin holds the inside, or the pin is refused; none holds the outside.
func TestPinWhileSwapping(t *testing.T) {
	root := tree(t)
	pn := newPinner(t)
	check := func(real string) error {
		if real != root+"/allowed/dir" && !strings.HasPrefix(real, root+"/allowed/dir/") {
			return errors.New("outside")
		}
		return nil
	}
	if err := os.Symlink("../outside", root+"/allowed/link"); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// allowed/dir and allowed/link trade places with each rename(2), atomically.
		for !stop.Load() {
			os.Rename(root+"/allowed/dir", root+"/allowed/tmp")
			os.Rename(root+"/allowed/link", root+"/allowed/dir")
			os.Rename(root+"/allowed/tmp", root+"/allowed/link")
			os.Rename(root+"/allowed/dir", root+"/allowed/tmp")
			os.Rename(root+"/allowed/link", root+"/allowed/dir")
			os.Rename(root+"/allowed/tmp", root+"/allowed/link")
		}
	}()
	pinned, refused := 0, 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) || pinned == 0 || refused == 0 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			break
		}
		p, err := pn.Pin(root+"/allowed/dir", check)
		if err != nil {
			refused++
			continue
		}
		pinned++
		if _, err := os.Stat(p.Path() + "/secret"); err == nil {
			t.Errorf("a pin holds the outside: %s", p.Real())
		}
		if _, err := os.Stat(p.Path() + "/file"); err != nil {
			t.Errorf("a pin does not hold the inside: %v", err)
		}
		p.Release()
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("pinned %d times, refused %d times", pinned, refused)
	if pinned == 0 {
		t.Error("nothing was pinned while swapping")
	}
}

// A pinner's directory left by a process that is gone is removed, pins and all, by the next
// pinner; one of a process that runs is left alone.
func TestNewPinnerRemovesStalePins(t *testing.T) {
	root := tree(t)
	base := filepath.Join(t.TempDir(), "pins")
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	old, err := NewPinner(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Pin(root+"/allowed/dir", accept); err != nil {
		t.Fatal(err)
	}
	// Make the pinner look like one of the dead process's, as if killed while holding p.
	stale := filepath.Join(base, strconv.Itoa(dead)+"-1")
	if err := os.Rename(old.Dir(), stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removePins(stale) })
	living, err := NewPinner(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { living.Close() })
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale pin directory: got %v, want it removed", err)
	}
	if b, err := os.ReadFile(root + "/allowed/dir/file"); err != nil || string(b) != "inside" {
		t.Errorf("the stale pin's directory: got %q, %v; want it untouched", b, err)
	}
	again, err := NewPinner(base)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := os.Stat(living.Dir()); err != nil {
		t.Errorf("a running process's pin directory: got %v, want it kept", err)
	}
}

func TestNewPinnerRefusesALinkedBase(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(t.TempDir(), dir+"/pins"); err != nil {
		t.Fatal(err)
	}
	if pn, err := NewPinner(dir + "/pins"); err == nil {
		pn.Close()
		t.Fatal("NewPinner through a symbolic link: got nil, want an error")
	}
}
