package boltstore_test

import (
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

var _ worker.Store = (*boltstore.Store)(nil)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// impl is a worker.Store implementation the conformance checks run against.
type impl struct {
	name string
	open func(tb testing.TB) worker.Store
}

var impls = []impl{
	{name: "MemoryStore", open: func(testing.TB) worker.Store { return &worker.MemoryStore{} }},
	{name: "boltstore", open: func(tb testing.TB) worker.Store { return openTemp(tb) }},
}

// openTemp opens a Store in a new file in a temporary directory and closes it when tb ends.
func openTemp(tb testing.TB) *boltstore.Store {
	tb.Helper()
	return openPath(tb, filepath.Join(tb.TempDir(), boltstore.FileName), boltstore.Options{})
}

// openPath opens the Store at path and closes it when tb ends.
func openPath(tb testing.TB, path string, opts boltstore.Options) *boltstore.Store {
	tb.Helper()
	s, err := boltstore.Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): got %v, want nil", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// fullTask returns a task with every map, slice and pointer set, in values that survive a JSON
// round trip unchanged (UTC times without a monotonic reading).
func fullTask(name string) task.Task {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	return task.Task{
		ID:            uuid.New(),
		Name:          name,
		State:         task.Running,
		Image:         "cube-echo:latest",
		Cpu:           0.5,
		Memory:        64 << 20,
		ExposedPorts:  task.PortSet{"7777/tcp": {}},
		PortBindings:  map[string]string{"7777/tcp": "8080"},
		HostPorts:     task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "8080"}}},
		RestartPolicy: "on-failure",
		StartTime:     at,
		Env:           []string{"A=1"},
		Cmd:           []string{"--listen", ":7777"},
		Restart:       &task.RestartSpec{},
		Health:        &task.HealthSpec{Type: task.HealthExec, Command: []string{"true"}, Interval: task.Duration(3 * time.Second)},
		RegistryAuth:  &task.RegistryAuth{Username: "u", Password: "secret"},
		CapAdd:        []string{"NET_ADMIN"},
		Devices:       []string{"/dev/fuse"},
		Binds:         []string{"/srv:/data:ro"},
		HealthStatus:  task.HealthHealthy,
		LastHealthCheck: &task.HealthResult{
			Time: at, Healthy: true, Output: "ok",
		},
		Pull:   &task.PullProgress{Layers: 2, LayersDone: 1},
		Events: []task.Record{{Time: at, Type: task.RecordStarted}},
	}
}

// scribble changes every map, slice and pointed-to value of t in place.
func scribble(t task.Task) {
	t.ExposedPorts["1/tcp"] = struct{}{}
	t.PortBindings["7777/tcp"] = "1"
	t.HostPorts["7777/tcp"][0].HostPort = "1"
	t.HostPorts["2/tcp"] = nil
	t.Env[0] = "A=changed"
	t.Cmd[0] = "changed"
	t.Health.Command[0] = "false"
	t.RegistryAuth.Password = "changed"
	t.CapAdd[0] = "SYS_ADMIN"
	t.Devices[0] = "/dev/mem"
	t.Binds[0] = "/:/host"
	t.LastHealthCheck.Output = "changed"
	t.Pull.Layers = 99
	t.Events[0].Type = "changed"
}

// startOrder returns a start order for t with a new event ID.
func startOrder(t task.Task) task.Order {
	return task.Order{Kind: task.OrderStart, TaskID: t.ID, Event: &task.Event{
		ID: uuid.New(), State: task.Scheduled, Timestamp: time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC), Task: t,
	}}
}

func mustPut(tb testing.TB, s worker.Store, ts ...task.Task) {
	tb.Helper()
	for _, t := range ts {
		if err := s.Put(t); err != nil {
			tb.Fatalf("Put(%s): got %v, want nil", t.Name, err)
		}
	}
}

func mustAccept(tb testing.TB, s worker.Store, t *task.Task, o task.Order) task.Order {
	tb.Helper()
	got, err := s.Accept(t, o)
	if err != nil {
		tb.Fatalf("Accept: got %v, want nil", err)
	}
	return got
}

// names returns the names of ts in order.
func names(ts []task.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// seqs returns the Seqs of os in order.
func seqs(orders []task.Order) []uint64 {
	out := make([]uint64, len(orders))
	for i, o := range orders {
		out[i] = o.Seq
	}
	return out
}

func wantTask(tb testing.TB, s worker.Store, want task.Task) {
	tb.Helper()
	got, ok := s.Get(want.ID)
	if !ok {
		tb.Fatalf("Get(%s): got no task, want %s", want.ID, want.Name)
	}
	if !reflect.DeepEqual(got, want) {
		tb.Errorf("Get(%s):\ngot  %+v\nwant %+v", want.ID, got, want)
	}
}

func wantNames(tb testing.TB, s worker.Store, want ...string) {
	tb.Helper()
	if got := names(s.List()); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		tb.Errorf("List: got %q, want %q", got, want)
	}
	if got := s.Len(); got != len(want) {
		tb.Errorf("Len: got %d, want %d", got, len(want))
	}
}

// conformance is what every worker.Store must do. Each check gets a new, empty store.
var conformance = []struct {
	name string
	run  func(t *testing.T, s worker.Store, im impl)
}{
	{"empty", func(t *testing.T, s worker.Store, _ impl) {
		if got, ok := s.Get(uuid.New()); ok || !reflect.DeepEqual(got, task.Task{}) {
			t.Errorf("Get: got %+v, %v, want the zero task and false", got, ok)
		}
		if got := s.List(); got == nil || len(got) != 0 {
			t.Errorf("List: got %#v, want an empty non-nil slice", got)
		}
		if got := s.Len(); got != 0 {
			t.Errorf("Len: got %d, want 0", got)
		}
		if got := s.Orders(); len(got) != 0 {
			t.Errorf("Orders: got %+v, want none", got)
		}
		if id, ok := s.Seen(uuid.New()); ok || id != uuid.Nil {
			t.Errorf("Seen: got %s, %v, want the nil UUID and false", id, ok)
		}
		if err := s.Delete(uuid.New()); err != nil {
			t.Errorf("Delete of an unknown task: got %v, want nil", err)
		}
		if err := s.Done(42); err != nil {
			t.Errorf("Done of an unknown order: got %v, want nil", err)
		}
	}},
	{"put get list", func(t *testing.T, s worker.Store, _ impl) {
		a, b, c := fullTask("a"), fullTask("b"), fullTask("c")
		mustPut(t, s, a, b, c)
		wantTask(t, s, a)
		wantTask(t, s, b)
		wantTask(t, s, c)
		wantNames(t, s, "a", "b", "c")

		a.State, a.ContainerID, a.Name = task.Completed, "", "a2"
		mustPut(t, s, a)
		wantTask(t, s, a)
		wantNames(t, s, "a2", "b", "c")
		if got := s.List()[0]; !reflect.DeepEqual(got, a) {
			t.Errorf("List()[0]:\ngot  %+v\nwant %+v", got, a)
		}
	}},
	{"put copies", func(t *testing.T, s worker.Store, _ impl) {
		orig := fullTask("a")
		want := orig.Clone()
		mustPut(t, s, orig)
		for what, get := range map[string]func() task.Task{
			"the task given to Put": func() task.Task { return orig },
			"a task from Get":       func() task.Task { got, _ := s.Get(want.ID); return got },
			"a task from List":      func() task.Task { return s.List()[0] },
		} {
			scribble(get())
			got, _ := s.Get(want.ID)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("stored task after changing %s:\ngot  %+v\nwant %+v", what, got, want)
			}
		}
	}},
	{"delete", func(t *testing.T, s worker.Store, _ impl) {
		a, b, c := fullTask("a"), fullTask("b"), fullTask("c")
		mustPut(t, s, a, b, c)
		if err := s.Delete(b.ID); err != nil {
			t.Fatalf("Delete: got %v, want nil", err)
		}
		if _, ok := s.Get(b.ID); ok {
			t.Errorf("Get after Delete: got a task, want none")
		}
		wantNames(t, s, "a", "c")
		if err := s.Delete(b.ID); err != nil {
			t.Errorf("Delete again: got %v, want nil", err)
		}
		mustPut(t, s, b) // stored again: it goes last
		wantNames(t, s, "a", "c", "b")
	}},
	{"accept a new task", func(t *testing.T, s worker.Store, _ impl) {
		a := fullTask("a")
		o := startOrder(a)
		got := mustAccept(t, s, &a, o)
		if got.Seq == 0 {
			t.Errorf("Accept: got Seq 0, want one assigned")
		}
		want := o
		want.Seq = got.Seq
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Accept:\ngot  %+v\nwant %+v", got, want)
		}
		wantTask(t, s, a)
		if got := s.Orders(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Errorf("Orders: got %+v, want [%+v]", got, want)
		}
		if id, ok := s.Seen(o.Event.ID); !ok || id != a.ID {
			t.Errorf("Seen(%s): got %s, %v, want %s, true", o.Event.ID, id, ok, a.ID)
		}
	}},
	{"accept an order for a known task", func(t *testing.T, s worker.Store, _ impl) {
		a := fullTask("a")
		mustPut(t, s, a)
		restart := startOrder(a)
		o1 := mustAccept(t, s, nil, restart)
		o2 := mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID})
		if o2.Seq <= o1.Seq {
			t.Errorf("Seqs: got %d then %d, want them growing", o1.Seq, o2.Seq)
		}
		if o2.Event != nil {
			t.Errorf("stop order: got Event %+v, want nil", o2.Event)
		}
		wantTask(t, s, a)
		wantNames(t, s, "a")
		if id, ok := s.Seen(restart.Event.ID); !ok || id != a.ID {
			t.Errorf("Seen(restart): got %s, %v, want %s, true", id, ok, a.ID)
		}
		if got, want := seqs(s.Orders()), []uint64{o1.Seq, o2.Seq}; !reflect.DeepEqual(got, want) {
			t.Errorf("Orders: got Seqs %v, want %v", got, want)
		}
	}},
	{"done", func(t *testing.T, s worker.Store, _ impl) {
		a := fullTask("a")
		var got []uint64
		for range 3 {
			got = append(got, mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID}).Seq)
		}
		if err := s.Done(got[1]); err != nil {
			t.Fatalf("Done: got %v, want nil", err)
		}
		if err := s.Done(got[1]); err != nil {
			t.Errorf("Done again: got %v, want nil", err)
		}
		if left, want := seqs(s.Orders()), []uint64{got[0], got[2]}; !reflect.DeepEqual(left, want) {
			t.Errorf("Orders after Done(%d): got Seqs %v, want %v", got[1], left, want)
		}
		next := mustAccept(t, s, nil, task.Order{Kind: task.OrderStop, TaskID: a.ID}).Seq
		if next <= got[2] {
			t.Errorf("Seq after Done: got %d, want more than %d", next, got[2])
		}
	}},
	{"delete forgets seen event IDs", func(t *testing.T, s worker.Store, _ impl) {
		a, b := fullTask("a"), fullTask("b")
		oa, ob := startOrder(a), startOrder(b)
		mustAccept(t, s, &a, oa)
		mustAccept(t, s, &b, ob)
		restart := mustAccept(t, s, nil, startOrder(a))
		if err := s.Delete(a.ID); err != nil {
			t.Fatalf("Delete: got %v, want nil", err)
		}
		for _, ev := range []uuid.UUID{oa.Event.ID, restart.Event.ID} {
			if id, ok := s.Seen(ev); ok {
				t.Errorf("Seen(%s) after Delete: got %s, true, want false", ev, id)
			}
		}
		if id, ok := s.Seen(ob.Event.ID); !ok || id != b.ID {
			t.Errorf("Seen of another task's event: got %s, %v, want %s, true", id, ok, b.ID)
		}
		// Orders are not the task: they stay until done.
		if got := len(s.Orders()); got != 3 {
			t.Errorf("Orders after Delete: got %d, want 3", got)
		}
	}},
	{"accept copies", func(t *testing.T, s worker.Store, im impl) {
		a := fullTask("a")
		o := startOrder(a)
		got := mustAccept(t, s, &a, o)
		want := got
		want.Event = &task.Event{ID: got.Event.ID, State: got.Event.State, Timestamp: got.Event.Timestamp, Task: got.Event.Task.Clone()}
		wantA := a.Clone()

		scribble(a)
		scribble(o.Event.Task)
		o.Event.State = task.Failed
		wantTask(t, s, wantA)
		if ords := s.Orders(); !reflect.DeepEqual(ords, []task.Order{want}) {
			t.Errorf("Orders after changing what was given to Accept:\ngot  %+v\nwant %+v", ords, []task.Order{want})
		}
		scribble(got.Event.Task)
		got.Event.State = task.Failed
		ords := s.Orders()
		scribble(ords[0].Event.Task)
		ords[0].Event.State = task.Failed
		if ords := s.Orders(); !reflect.DeepEqual(ords, []task.Order{want}) {
			t.Errorf("Orders after changing Accept's answer and Orders':\ngot  %+v\nwant %+v", ords, []task.Order{want})
		}
	}},
}

// wantSums checks a store's counts by state and the claims of its tasks that have not ended
// against a walk of its List, as the worker counted before the stores kept the sums.
func wantSums(tb testing.TB, s worker.Store) {
	tb.Helper()
	byState := map[task.State]int{}
	var cpu float64
	var mem int64
	for _, t := range s.List() {
		byState[t.State]++
		if !t.State.Ended() {
			cpu += t.Cpu
			mem += t.Memory
		}
	}
	for _, st := range []task.State{task.Pending, task.Scheduled, task.Running, task.Completed, task.Failed} {
		if got := s.Count(st); got != byState[st] {
			tb.Errorf("Count(%v): got %d, want %d", st, got, byState[st])
		}
	}
	if got := s.Claimed(uuid.Nil); math.Abs(got.CPU-cpu) > 1e-9 || got.Memory != mem {
		tb.Errorf("Claimed: got %+v, want {CPU:%g Memory:%d}", got, cpu, mem)
	}
}

func init() {
	conformance = append(conformance, struct {
		name string
		run  func(t *testing.T, s worker.Store, im impl)
	}{"snapshot counts claims", func(t *testing.T, s worker.Store, _ impl) {
		a, b, c := fullTask("a"), fullTask("b"), fullTask("c")
		b.State = task.Scheduled
		mustPut(t, s, a, b)
		mustAccept(t, s, &c, startOrder(c))
		wantSums(t, s)
		if got := s.Claimed(a.ID); got.Memory != b.Memory+c.Memory || math.Abs(got.CPU-(b.Cpu+c.Cpu)) > 1e-9 {
			t.Errorf("Claimed but for a: got %+v, want b's and c's", got)
		}
		snap := s.Snapshot(nil)
		if !reflect.DeepEqual(snap, s.List()) {
			t.Errorf("Snapshot:\ngot  %+v\nwant List's %+v", snap, s.List())
		}
		before := s.List()
		scribble(a) // what was given to Put is not what is stored
		a = before[0].Clone()
		a.State, a.Env = task.Completed, append(a.Env, "NEW=1")
		mustPut(t, s, a)
		if !reflect.DeepEqual(snap, before) {
			t.Errorf("a Snapshot after a Put changed:\ngot  %+v\nwant %+v", snap, before)
		}
		if got := s.Count(task.Completed); got != 1 {
			t.Errorf("Count(Completed): got %d, want 1", got)
		}
		wantSums(t, s)
		if err := s.Delete(b.ID); err != nil {
			t.Fatal(err)
		}
		wantSums(t, s)
		if got := s.Claimed(uuid.Nil); got.Memory != c.Memory {
			t.Errorf("Claimed with only c not ended: got %+v, want c's %d bytes", got, c.Memory)
		}
		if got := s.Snapshot(make([]task.Task, 1)); len(got) != 3 || got[0].ID != uuid.Nil {
			t.Errorf("Snapshot(a slice of 1): got %d tasks, want the 1 given and 2 appended", len(got))
		}
	}})
}

// TestConformance runs the same checks against every worker.Store, so that they cannot drift.
func TestConformance(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, im.open(t), im)
				})
			}
		})
	}
}
