package namelock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAcquireExcludesTheSameNameOnTheSameEngine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks") // made by Acquire
	since := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	first, err := Acquire(dir, "ENGINE:A", "web-1", since)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Release() })

	// A flock belongs to the open file: a second open, even in this process, is refused.
	_, err = Acquire(dir, "ENGINE:A", "web-1", time.Now())
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: got %v, want a *HeldError", err)
	}
	if held.Holder.PID != os.Getpid() || !held.Holder.Since.Equal(since) || held.Path != first.Path() {
		t.Errorf("HeldError: got %+v, want pid %d since %v in %s", held, os.Getpid(), since, first.Path())
	}
	want := `worker name "web-1" is in use on this Docker Engine (ID ENGINE:A) by pid ` + strconv.Itoa(os.Getpid())
	if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.Contains(msg, "since 2026-12-01T09:30:00Z") || !strings.Contains(msg, first.Path()) {
		t.Errorf("message: got %q, want it to start %q and say since when and which file", msg, want)
	}

	// Another name on the same Engine, and the same name on another Engine, are free.
	for _, other := range [][2]string{{"ENGINE:A", "web-2"}, {"ENGINE:B", "web-1"}} {
		l, err := Acquire(dir, other[0], other[1], time.Now())
		if err != nil {
			t.Errorf("Acquire(%s, %s): %v, want it free", other[0], other[1], err)
			continue
		}
		if l.Path() == first.Path() {
			t.Errorf("Acquire(%s, %s) shares the lock file of web-1 on ENGINE:A", other[0], other[1])
		}
		l.Release()
	}

	// Once released, the file is gone, the name can be taken again, and the file says by whom.
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file after Release: %v, want it removed", err)
	}
	again, err := Acquire(dir, "ENGINE:A", "web-1", since.Add(time.Hour))
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer again.Release()
	b, err := os.ReadFile(again.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"Since":"2026-12-01T10:30:00Z"`) || strings.Contains(string(b), "09:30") {
		t.Errorf("lock file after the new holder wrote it: %s", b)
	}
	if err := first.Release(); err != nil {
		t.Errorf("a second Release: %v, want nil", err)
	}
}

func TestAcquireNeedsAnEngineIDAndAName(t *testing.T) {
	for _, args := range [][2]string{{"", "web"}, {"ENGINE", ""}} {
		if l, err := Acquire(t.TempDir(), args[0], args[1], time.Now()); err == nil {
			l.Release()
			t.Errorf("Acquire(%q, %q): got nil error", args[0], args[1])
		}
	}
}

func TestAcquireInADirectoryThatCannotBeMade(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Acquire(filepath.Join(file, "locks"), "ENGINE", "web", time.Now())
	if err == nil || !strings.Contains(err.Error(), "worker name lock") || !strings.Contains(err.Error(), file) {
		t.Errorf("got %v, want an error naming the path", err)
	}
}

func TestDefaultDir(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	tests := []struct {
		name string
		env  map[string]string
		euid int
		want string
	}{
		{"root", map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, 0, "/run/cube"},
		{"user with a runtime dir", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/cube"},
		{"user without one", nil, 1000, filepath.Join(os.TempDir(), "cube-1000")},
	}
	for _, tt := range tests {
		if got := DefaultDir(env(tt.env), tt.euid); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Processes (here goroutines, each with files of its own) that take and give up one name as fast
// as they can never hold it at once, although Release removes the file others may have open.
func TestAcquireReleaseRace(t *testing.T) {
	dir := t.TempDir()
	var holders, taken atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				l, err := Acquire(dir, "ENGINE", "web", time.Now())
				var held *HeldError
				if errors.As(err, &held) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders of one name at once", n)
				}
				taken.Add(1)
				time.Sleep(200 * time.Microsecond) // held a while, so that a second holder would overlap
				holders.Add(-1)
				if err := l.Release(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if taken.Load() == 0 {
		t.Fatal("no Acquire succeeded")
	}
	t.Logf("taken %d times", taken.Load())
}
