package boltstore

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// TestDiskFailureChangesNothing makes every write fail in bbolt, after encoding succeeded, by
// closing the database under the store, and checks that memory is left as it was.
func TestDiskFailureChangesNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := task.Task{ID: uuid.New(), Name: "a"}
	o, err := s.Accept(&a, task.Order{Kind: task.OrderStart, TaskID: a.ID, Event: &task.Event{ID: uuid.New(), Task: a}})
	if err != nil {
		t.Fatal(err)
	}
	before := dump(s)
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}

	b := task.Task{ID: uuid.New(), Name: "b"}
	changed := a
	changed.Name = "changed"
	writes := map[string]func() error{
		"Put of a new task":   func() error { return s.Put(b) },
		"Put of a known task": func() error { return s.Put(changed) },
		"Delete":              func() error { return s.Delete(a.ID) },
		"Done":                func() error { return s.Done(o.Seq) },
		"Accept of a new task": func() error {
			_, err := s.Accept(&b, task.Order{Kind: task.OrderStart, TaskID: b.ID, Event: &task.Event{ID: uuid.New(), Task: b}})
			return err
		},
		"Accept of a stop": func() error {
			_, err := s.Accept(nil, task.Order{Kind: task.OrderStop, TaskID: a.ID})
			return err
		},
	}
	for name, write := range writes {
		if err := write(); err == nil {
			t.Errorf("%s on a closed database: got nil error, want one", name)
		}
		if got := dump(s); !reflect.DeepEqual(got, before) {
			t.Errorf("memory after a failed %s:\ngot  %+v\nwant %+v", name, got, before)
		}
	}
}

// memory is everything a Store keeps in memory.
type memory struct {
	Tasks  map[uuid.UUID]taskindex.Entry
	Order  []uuid.UUID
	Orders []task.Order
	Seen   map[uuid.UUID]uuid.UUID
}

func dump(s *Store) memory {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := memory{Tasks: make(map[uuid.UUID]taskindex.Entry), Seen: make(map[uuid.UUID]uuid.UUID)}
	s.index.Entries(func(e taskindex.Entry) bool {
		m.Tasks[e.Task.ID] = taskindex.Entry{Seq: e.Seq, Task: e.Task.Clone()}
		m.Order = append(m.Order, e.Task.ID)
		return true
	})
	for _, o := range s.orders {
		m.Orders = append(m.Orders, cloneOrder(o))
	}
	s.index.EachSeen(func(ev, id uuid.UUID) { m.Seen[ev] = id })
	return m
}

// Writes made at the same time share transactions, each of which costs its fsyncs, and every one
// of them is on disk when it returns.
func TestConcurrentWritesShareTransactions(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	txID := func() int {
		var id int
		s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	const n = 32
	before := txID()
	var wg sync.WaitGroup
	start := make(chan struct{})
	ids := make([]uuid.UUID, n)
	for i := range n {
		ids[i] = uuid.New()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := s.Put(task.Task{ID: ids[i], Name: "t"}); err != nil {
				t.Error(err)
			}
		}()
	}
	// A commit under way (held here) makes the writes that come meanwhile queue: once it is
	// done they commit together. Holding it makes them overlap however the goroutines are
	// scheduled; without it, on a loaded machine, they sometimes did not.
	s.cmu.Lock()
	close(start)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.qmu.Lock()
		queued := len(s.queue)
		s.qmu.Unlock()
		if queued == n-1 {
			break
		}
		if time.Now().After(deadline) {
			s.cmu.Unlock()
			t.Fatalf("%d of %d writes queued behind the commit under way within 10s", queued, n-1)
		}
	}
	s.cmu.Unlock()
	wg.Wait()
	txs := txID() - before
	if txs > 2 {
		t.Errorf("%d concurrent writes took %d transactions, want 2: the one under way, then the %d that queued, together", n, txs, n-1)
	}
	t.Logf("%d concurrent writes, %d transactions", n, txs)
	s = reopen(t, s, path)
	for _, id := range ids {
		if _, ok := s.Get(id); !ok {
			t.Errorf("task %s is not on disk", id)
		}
	}
	if got := s.Len(); got != n {
		t.Errorf("Len after reopen: %d, want %d", got, n)
	}
}

// A task is kept in AppendCompactJSON's form, and reads back, after a reopen, as the task Put;
// a record written whole, as json.Marshal writes it (as the store wrote them before), reads too.
func TestRecordsCompactAndWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 20, 0, 0, 123, time.UTC)
	compact := task.Task{ID: uuid.New(), Name: "compact", State: task.Failed, Image: "img:1",
		ExposedPorts: task.PortSet{}, Cmd: []string{}, FinishTime: now, Error: "no such image",
		PullPolicy: "never", Events: []task.Record{{Time: now, Type: "Failed", Message: "no such image"}}}
	whole := task.Task{ID: uuid.New(), Name: "whole", State: task.Running, Image: "img:2", Cpu: 0.5,
		ExposedPorts: task.PortSet{"80/tcp": {}}, StartTime: now, ContainerID: "abc", Env: []string{"A=1"}}
	if err := s.Put(compact); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(taskRecord{Seq: 1000, Task: whole})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTasks).Put(whole.ID[:], data) }); err != nil {
		t.Fatal(err)
	}
	var stored []byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		stored = append(stored, tx.Bucket(bucketTasks).Get(compact.ID[:])...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	full, _ := json.Marshal(taskRecord{Seq: 1, Task: compact})
	for _, zero := range []string{`"Cpu":0`, `"ContainerID":""`, `"StartTime":"0001-01-01T00:00:00Z"`, `"HostPorts":null`} {
		if bytes.Contains(stored, []byte(zero)) {
			t.Errorf("stored record %s holds %s, a zero field", stored, zero)
		}
	}
	if len(stored) >= len(full) {
		t.Errorf("stored record is %d bytes, json.Marshal's %d: want it smaller", len(stored), len(full))
	}
	s = reopen(t, s, path)
	for _, want := range []task.Task{compact, whole} {
		got, ok := s.Get(want.ID)
		if !ok {
			t.Fatalf("task %s not found after reopen", want.Name)
		}
		g, _ := task.AppendJSON(nil, &got)
		w, _ := task.AppendJSON(nil, &want)
		if !bytes.Equal(g, w) {
			t.Errorf("task %s after reopen:\n got %s\nwant %s", want.Name, g, w)
		}
	}
}

// Stored tasks with the same exposed ports share one map, as written and as read back; tasks
// with other ports, or none, do not; Get still hands out a map of the caller's own.
func TestExposedPortsShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(ports ...string) task.Task {
		tk := task.Task{ID: uuid.New(), Name: "t", Image: "img"}
		if ports != nil {
			tk.ExposedPorts = task.PortSet{}
			for _, p := range ports {
				tk.ExposedPorts[p] = struct{}{}
			}
		}
		return tk
	}
	tasks := []task.Task{mk("7777/tcp", "53/udp"), mk("53/udp", "7777/tcp"), mk("7777/tcp"), mk()}
	for _, tk := range tasks {
		if err := s.Put(tk); err != nil {
			t.Fatal(err)
		}
	}
	same := func(a, b task.PortSet) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	check := func(when string) {
		t.Helper()
		refs := s.Refs(nil)
		if !same(refs[0].ExposedPorts, refs[1].ExposedPorts) {
			t.Errorf("%s: two tasks exposing 7777/tcp and 53/udp hold two maps, want one", when)
		}
		if same(refs[0].ExposedPorts, refs[2].ExposedPorts) || len(refs[2].ExposedPorts) != 1 {
			t.Errorf("%s: the task exposing 7777/tcp alone got %v, shared with the others: %v", when, refs[2].ExposedPorts, same(refs[0].ExposedPorts, refs[2].ExposedPorts))
		}
		if refs[3].ExposedPorts != nil {
			t.Errorf("%s: a task exposing no ports got %v, want nil", when, refs[3].ExposedPorts)
		}
		got, _ := s.Get(tasks[0].ID)
		if same(got.ExposedPorts, refs[0].ExposedPorts) {
			t.Errorf("%s: Get handed out the shared map", when)
		}
	}
	check("after Put")
	s = reopen(t, s, path)
	check("after reopen")
}

// reopen closes s and opens the store at path again, closed when the test ends.
func reopen(t *testing.T, s *Store, path string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
