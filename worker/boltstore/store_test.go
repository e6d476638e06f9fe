package boltstore_test

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// reopen closes s and opens the file at path again.
func reopen(tb testing.TB, s *boltstore.Store, path string) *boltstore.Store {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: got %v, want nil", err)
	}
	return openPath(tb, path, boltstore.Options{})
}

func TestListOrderSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	s := openPath(t, path, boltstore.Options{})
	a, b, c, d := fullTask("a"), fullTask("b"), fullTask("c"), fullTask("d")
	// Random UUIDs make the bucket's key order unrelated to the insertion order; make sure of it
	// by using IDs that sort against it.
	a.ID, b.ID, c.ID, d.ID = uuid.MustParse("ffffffff-0000-4000-8000-000000000000"),
		uuid.MustParse("aaaaaaaa-0000-4000-8000-000000000000"),
		uuid.MustParse("55555555-0000-4000-8000-000000000000"),
		uuid.MustParse("00000000-0000-4000-8000-000000000000")
	mustPut(t, s, a, b, c, d)
	b.Name = "b2"
	mustPut(t, s, b) // keeps its place
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, a) // goes last
	want := s.List()
	wantNames(t, s, "b2", "c", "d", "a")

	s = reopen(t, s, path)
	if got := s.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("List after reopen:\ngot  %+v\nwant %+v", got, want)
	}
	wantNames(t, s, "b2", "c", "d", "a")
	e := fullTask("e")
	mustPut(t, s, e)
	wantNames(t, s, "b2", "c", "d", "a", "e")
	s = reopen(t, s, path)
	wantNames(t, s, "b2", "c", "d", "a", "e")
	wantTask(t, s, e)
}

// The counts by state and the claims are rebuilt from the file: a worker that restarts admits
// and counts as before.
func TestSumsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	s := openPath(t, path, boltstore.Options{})
	a, b, c := fullTask("a"), fullTask("b"), fullTask("c")
	c.State = task.Failed
	mustPut(t, s, a, b, c)
	want, wantRunning := s.Claimed(uuid.Nil), s.Count(task.Running)
	s = reopen(t, s, path)
	if got := s.Claimed(uuid.Nil); got != want {
		t.Errorf("Claimed after reopen: got %+v, want %+v", got, want)
	}
	if got := s.Count(task.Running); got != wantRunning || got != 2 {
		t.Errorf("Count(Running) after reopen: got %d, want 2", got)
	}
	wantSums(t, s)
}

func TestAcceptSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	s := openPath(t, path, boltstore.Options{})
	a := fullTask("a")
	o := mustAccept(t, s, &a, startOrder(a))
	stop := mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID})

	s = reopen(t, s, path)
	wantTask(t, s, a)
	if got := s.Orders(); !reflect.DeepEqual(got, []task.Order{o, stop}) {
		t.Errorf("Orders after reopen:\ngot  %+v\nwant %+v", got, []task.Order{o, stop})
	}
	if id, ok := s.Seen(o.Event.ID); !ok || id != a.ID {
		t.Errorf("Seen after reopen: got %s, %v, want %s, true", id, ok, a.ID)
	}
	if got := s.Orders()[0].Event.Task.RegistryAuth; got == nil || got.Password != "secret" {
		t.Errorf("the order's RegistryAuth after reopen: got %+v, want the credentials kept", got)
	}

	// Seq keeps growing across reopens, even once every order is done.
	for _, x := range s.Orders() {
		if err := s.Done(x.Seq); err != nil {
			t.Fatalf("Done(%d): got %v, want nil", x.Seq, err)
		}
	}
	s = reopen(t, s, path)
	if got := s.Orders(); len(got) != 0 {
		t.Errorf("Orders after Done and reopen: got %+v, want none", got)
	}
	next := mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID})
	if next.Seq <= stop.Seq {
		t.Errorf("Seq after reopen: got %d, want more than %d", next.Seq, stop.Seq)
	}
}

func TestDeleteSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	s := openPath(t, path, boltstore.Options{})
	a, b := fullTask("a"), fullTask("b")
	oa := mustAccept(t, s, &a, startOrder(a))
	ob := mustAccept(t, s, &b, startOrder(b))
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, path)
	wantNames(t, s, "b")
	if _, ok := s.Seen(oa.Event.ID); ok {
		t.Errorf("Seen of the deleted task's event after reopen: got true, want false")
	}
	if id, ok := s.Seen(ob.Event.ID); !ok || id != b.ID {
		t.Errorf("Seen of the other task's event after reopen: got %s, %v, want %s, true", id, ok, b.ID)
	}
}

func TestOpenDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "worker")
	s, err := boltstore.OpenDir(dir, boltstore.Options{})
	if err != nil {
		t.Fatalf("OpenDir: got %v, want nil", err)
	}
	defer s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, boltstore.FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s: got %v, want %v", path, got, want)
		}
	}
}

func TestSecondOpenFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, boltstore.FileName)
	s := openPath(t, path, boltstore.Options{})
	a := fullTask("a")
	mustPut(t, s, a)

	for _, tt := range []struct {
		name string
		open func() (*boltstore.Store, error)
		want string
	}{
		{"Open", func() (*boltstore.Store, error) { return boltstore.Open(path, boltstore.Options{}) },
			"database " + path + " is in use by another cube worker (the file is locked)"},
		{"OpenDir", func() (*boltstore.Store, error) { return boltstore.OpenDir(dir, boltstore.Options{}) },
			"data dir " + dir + " is in use by another cube worker (database " + path + " is locked)"},
		{"Open trying once", func() (*boltstore.Store, error) {
			return boltstore.Open(path, boltstore.Options{LockTimeout: -1})
		}, "database " + path + " is in use by another cube worker (the file is locked)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s2, err := tt.open()
			took := time.Since(start)
			if err == nil {
				s2.Close()
				t.Fatalf("second open of %s: got nil error, want ErrLocked", path)
			}
			if !errors.Is(err, boltstore.ErrLocked) {
				t.Errorf("second open: got %v, want an error matching ErrLocked", err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("second open: got %q, want %q", got, tt.want)
			}
			if took > time.Second {
				t.Errorf("second open took %v, want well under a second", took)
			}
		})
	}

	// The first store is unharmed, and once it is closed the file opens again.
	wantTask(t, s, a)
	mustPut(t, s, fullTask("b"))
	s = reopen(t, s, path)
	wantNames(t, s, "a", "b")
}

// file200 writes a store of 200 tasks at path and returns the file's bytes.
func file200(t *testing.T, path string) []byte {
	t.Helper()
	s := openPath(t, path, boltstore.Options{NoSync: true}) // 200 fsyncs are slow on a busy disk
	for i := range 200 {
		mustPut(t, s, fullTask(fmt.Sprint(i)))
	}
	s.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestOpenBadFile(t *testing.T) {
	dir := t.TempDir()
	garbage := bytes.Repeat([]byte("not a database "), 1000)

	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string // in the error, besides the path
	}{
		{"garbage", func(t *testing.T, path string) { write(t, path, garbage) }, "corrupt"},
		{"short garbage", func(t *testing.T, path string) { write(t, path, garbage[:100]) }, ""},
		{"a directory", func(t *testing.T, path string) { os.Mkdir(path, 0o700) }, ""},
		{"no parent directory", func(t *testing.T, path string) {}, "no such file"},
		{"truncated", func(t *testing.T, path string) {
			data := file200(t, path)
			write(t, path, data[:len(data)/2])
		}, ""},
		// The freelist page lies past the end of the file but inside bbolt's memory map (which
		// is rounded up to a power of two): reading it faults with SIGBUS, which crashed the
		// process until Open made faults panics. The case above cuts at half the file, which
		// puts the freelist there now and then, as its place moves with the random task IDs.
		{"truncated before its freelist page", func(t *testing.T, path string) {
			data := file200(t, path)
			freelist := freelistPage(t, data)
			if freelist*4096 >= uint64(len(data)) {
				t.Fatalf("freelist page %d of %d: want one inside the file", freelist, len(data)/4096)
			}
			write(t, path, data[:freelist*4096])
		}, "corrupt"},
		{"meta pages overwritten", func(t *testing.T, path string) {
			s := openPath(t, path, boltstore.Options{})
			mustPut(t, s, fullTask("a"))
			s.Close()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			copy(data[:8192], garbage)
			write(t, path, data)
		}, "corrupt"},
		{"a record that is not JSON", func(t *testing.T, path string) {
			s := openPath(t, path, boltstore.Options{})
			a := fullTask("a")
			mustPut(t, s, a)
			s.Close()
			boltUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket([]byte("tasks")).Put(a.ID[:], []byte("{")) })
		}, "task"},
		{"another schema version", func(t *testing.T, path string) {
			openPath(t, path, boltstore.Options{}).Close()
			boltUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("9")) })
		}, "schema version"},
		{"another program's database", func(t *testing.T, path string) {
			boltUpdate(t, path, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err })
		}, "not a cube database"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"), boltstore.FileName)
			if tt.name != "no parent directory" {
				os.Mkdir(filepath.Dir(path), 0o700)
			}
			tt.setup(t, path)
			s, err := boltstore.Open(path, boltstore.Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open: got nil error, want one naming %s", path)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open: got %q, want an error naming %s and saying %q", err, path, tt.want)
			}
			if errors.Is(err, boltstore.ErrLocked) {
				t.Errorf("Open: got %v, which matches ErrLocked; want it not to", err)
			}
			t.Log(err)
			// A failed Open released the file: trying again fails the same way, not with ErrLocked.
			s, err2 := boltstore.Open(path, boltstore.Options{})
			if err2 == nil {
				s.Close()
			}
			if err2 == nil || errors.Is(err2, boltstore.ErrLocked) || !strings.Contains(err2.Error(), tt.want) {
				t.Errorf("Open again: got %v, want an error like %v", err2, err)
			}
		})
	}
}

// freelistPage returns the page of the freelist that the newer of a bbolt file's two meta pages
// names (4 KiB pages; a meta page holds, after its 16-byte page header: magic, version, page
// size and flags, 4 bytes each, the root bucket's page and sequence, then the freelist page, the
// high-water page and the transaction ID, 8 bytes each).
func freelistPage(tb testing.TB, data []byte) uint64 {
	tb.Helper()
	if len(data) < 2*4096 {
		tb.Fatalf("file of %d bytes: want two meta pages", len(data))
	}
	var freelist, txid uint64
	for _, off := range []int{0, 4096} {
		m := data[off+16:]
		if tx := binary.LittleEndian.Uint64(m[48:]); tx >= txid {
			txid, freelist = tx, binary.LittleEndian.Uint64(m[32:])
		}
	}
	return freelist
}

func write(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// boltUpdate changes the bbolt file at path behind boltstore's back.
func boltUpdate(tb testing.TB, path string, fn func(*bolt.Tx) error) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		tb.Fatal(err)
	}
}

func TestWriteFailureChangesNothing(t *testing.T) {
	s := openTemp(t)
	a := fullTask("a")
	oa := mustAccept(t, s, &a, startOrder(a))
	bad := a.Clone()
	bad.Cpu = math.NaN() // JSON cannot encode it
	before := snapshot(s)

	if err := s.Put(bad); err == nil {
		t.Errorf("Put of a task JSON cannot encode: got nil error, want one")
	}
	newBad := fullTask("new")
	newBad.Cpu = math.Inf(1)
	if _, err := s.Accept(&newBad, startOrder(newBad)); err == nil {
		t.Errorf("Accept of a task JSON cannot encode: got nil error, want one")
	}
	restart := startOrder(a)
	restart.Event.Task = bad
	if _, err := s.Accept(nil, restart); err == nil {
		t.Errorf("Accept of an order JSON cannot encode: got nil error, want one")
	}
	if got := snapshot(s); !reflect.DeepEqual(got, before) {
		t.Errorf("store after failed writes:\ngot  %+v\nwant %+v", got, before)
	}
	if _, ok := s.Seen(restart.Event.ID); ok {
		t.Errorf("Seen of a failed Accept's event: got true, want false")
	}
	// The failed Accepts did not use up a Seq.
	if got := mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID}).Seq; got != oa.Seq+1 {
		t.Errorf("Seq after failed Accepts: got %d, want %d", got, oa.Seq+1)
	}
}

// state is everything a Store shows.
type state struct {
	Tasks  []task.Task
	Orders []task.Order
}

func snapshot(s worker.Store) state { return state{s.List(), s.Orders()} }

func TestConcurrentUse(t *testing.T) {
	s := openPath(t, filepath.Join(t.TempDir(), boltstore.FileName), boltstore.Options{NoSync: true})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				x := fullTask(fmt.Sprintf("w%d-%d", w, i))
				o, err := s.Accept(&x, startOrder(x))
				if err != nil {
					t.Errorf("Accept: %v", err)
					return
				}
				x.State = task.Completed
				if err := s.Put(x); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				if got, ok := s.Get(x.ID); !ok || got.State != task.Completed {
					t.Errorf("Get(%s): got %v, %v, want Completed", x.Name, got.State, ok)
				}
				if id, ok := s.Seen(o.Event.ID); !ok || id != x.ID {
					t.Errorf("Seen: got %s, %v, want %s, true", id, ok, x.ID)
				}
				for _, y := range s.List() {
					scribble(y) // copies, so this races with nothing
				}
				for _, y := range s.Orders() {
					_ = y.Event.Task.Name
				}
				_ = s.Len()
				if i%2 == 0 {
					if err := s.Done(o.Seq); err != nil {
						t.Errorf("Done: %v", err)
					}
				}
				if i%5 == 0 {
					if err := s.Delete(x.ID); err != nil {
						t.Errorf("Delete: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()

	wantTasks := workers * (each - each/5)
	wantOrders := workers * (each / 2)
	if got := s.Len(); got != wantTasks {
		t.Errorf("Len: got %d, want %d", got, wantTasks)
	}
	ords := s.Orders()
	if len(ords) != wantOrders {
		t.Errorf("Orders: got %d, want %d", len(ords), wantOrders)
	}
	if !slices.IsSortedFunc(ords, func(a, b task.Order) int { return cmp.Compare(a.Seq, b.Seq) }) {
		t.Errorf("Orders: got Seqs %v, want them in order", seqs(ords))
	}
}
