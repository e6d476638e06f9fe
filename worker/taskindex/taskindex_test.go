package taskindex_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/google/uuid"
)

// walk is what the running sums must equal: the claims and counts found by walking every task,
// as the worker did before the index kept them.
func walk(tasks map[uuid.UUID]task.Task, except uuid.UUID) (cpu float64, mem int64, states map[task.State]int) {
	states = map[task.State]int{}
	for _, t := range tasks {
		states[t.State]++
		if t.ID == except || t.State.Ended() {
			continue
		}
		switch {
		case math.IsNaN(t.Cpu) || math.IsInf(t.Cpu, 1):
			cpu = math.Inf(1)
		case t.Cpu > 0:
			cpu += t.Cpu
		}
		if t.Memory > 0 {
			if t.Memory > math.MaxInt64-mem {
				mem = math.MaxInt64
			} else {
				mem += t.Memory
			}
		}
	}
	return cpu, mem, states
}

func TestSumsFollowEveryChange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var x taskindex.Index
	tasks := map[uuid.UUID]task.Task{}
	var ids []uuid.UUID
	states := []task.State{task.Pending, task.Scheduled, task.Running, task.Completed, task.Failed}
	for i := range 20000 {
		switch op := r.IntN(10); {
		case op < 6 || len(ids) == 0: // a new task
			tk := task.Task{ID: uuid.New(), State: states[r.IntN(len(states))],
				Cpu: float64(r.IntN(400)) / 100, Memory: int64(r.IntN(1<<20)) << 12}
			ids = append(ids, tk.ID)
			tasks[tk.ID] = tk
			x.Put(tk, uint64(i))
		case op < 9: // a change of state, or of claim (a restart with another spec)
			id := ids[r.IntN(len(ids))]
			tk := tasks[id]
			tk.State = states[r.IntN(len(states))]
			if r.IntN(4) == 0 {
				tk.Cpu = float64(r.IntN(400)) / 100
			}
			tasks[id] = tk
			x.Put(tk, 0)
		default:
			j := r.IntN(len(ids))
			id := ids[j]
			ids = slices.Delete(ids, j, j+1)
			delete(tasks, id)
			x.Delete(id)
		}
		if i%97 != 0 {
			continue
		}
		except := uuid.Nil
		if len(ids) > 0 && i%2 == 0 {
			except = ids[r.IntN(len(ids))]
		}
		cpu, mem, byState := walk(tasks, except)
		got := x.Claimed(except)
		if math.Abs(got.CPU-cpu) > 1e-6 || got.Memory != mem {
			t.Fatalf("step %d: Claimed: got %+v, want {CPU:%g Memory:%d}", i, got, cpu, mem)
		}
		for _, s := range states {
			if n := x.Count(s); n != byState[s] {
				t.Fatalf("step %d: Count(%v): got %d, want %d", i, s, n, byState[s])
			}
		}
		if x.Len() != len(tasks) {
			t.Fatalf("step %d: Len: got %d, want %d", i, x.Len(), len(tasks))
		}
	}
}

// After every claim has come and gone, nothing is claimed: not a rounding error's worth, which a
// float sum of 0.1s and 0.2s added and taken away would leave.
func TestSumsReturnToZero(t *testing.T) {
	var x taskindex.Index
	var ids []uuid.UUID
	for i := range 1000 {
		tk := task.Task{ID: uuid.New(), State: task.Running, Cpu: []float64{0.1, 0.2, 0.7, 1e9}[i%4], Memory: 1 << 20}
		ids = append(ids, tk.ID)
		x.Put(tk, 0)
	}
	if got := x.Claimed(uuid.Nil); got.Memory != 1000<<20 || math.Abs(got.CPU-(250*(0.1+0.2+0.7)+250e9)) > 1e-3 {
		t.Fatalf("Claimed: got %+v, want 1000 MiB and 250e9+250 cores", got)
	}
	for _, id := range ids {
		e, _ := x.Get(id)
		e.Task.State = task.Completed
		x.Put(e.Task, 0)
	}
	if got := x.Claimed(uuid.Nil); got != (taskindex.Claims{}) {
		t.Fatalf("Claimed once all ended: got %+v, want zero", got)
	}
}

func TestClaimsSaturate(t *testing.T) {
	var x taskindex.Index
	put := func(tk task.Task) uuid.UUID {
		tk.ID, tk.State = uuid.New(), task.Running
		x.Put(tk, 0)
		return tk.ID
	}
	a := put(task.Task{Memory: math.MaxInt64})
	put(task.Task{Memory: math.MaxInt64})
	if got := x.Claimed(uuid.Nil).Memory; got != math.MaxInt64 {
		t.Errorf("two max int64 claims: got %d, want max int64", got)
	}
	if got := x.Claimed(a).Memory; got != math.MaxInt64 {
		t.Errorf("one left out: got %d, want max int64", got)
	}
	x.Delete(a)
	nan := put(task.Task{Cpu: math.NaN()})
	if got := x.Claimed(uuid.Nil).CPU; !math.IsInf(got, 1) {
		t.Errorf("a NaN claim: got %g cores, want +Inf", got)
	}
	if got := x.Claimed(nan).CPU; got != 0 {
		t.Errorf("the NaN claim left out: got %g cores, want 0", got)
	}
	put(task.Task{Cpu: math.MaxFloat64})
	put(task.Task{Cpu: math.MaxFloat64})
	x.Delete(nan)
	if got := x.Claimed(uuid.Nil).CPU; !math.IsInf(got, 1) {
		t.Errorf("two max float64 claims: got %g cores, want +Inf", got)
	}
}

func TestOrderAndEvents(t *testing.T) {
	var x taskindex.Index
	a, b, c := task.Task{ID: uuid.New(), Name: "a"}, task.Task{ID: uuid.New(), Name: "b"}, task.Task{ID: uuid.New(), Name: "c"}
	x.Put(a, 1)
	x.Put(b, 2)
	x.Put(c, 3)
	a.Name = "a2"
	x.Put(a, 1) // a replaced task keeps its place
	evA, evB := uuid.New(), uuid.New()
	x.See(evA, a.ID)
	x.See(evB, b.ID)
	if got := names(x.Snapshot(nil)); !slices.Equal(got, []string{"a2", "b", "c"}) {
		t.Fatalf("Snapshot: got %v, want [a2 b c]", got)
	}
	if evs := x.Delete(a.ID); !slices.Equal(evs, []uuid.UUID{evA}) {
		t.Errorf("Delete: got events %v, want [%s]", evs, evA)
	}
	if _, ok := x.Seen(evA); ok {
		t.Errorf("Seen(%s) after its task was deleted: got true, want false", evA)
	}
	if id, ok := x.Seen(evB); !ok || id != b.ID {
		t.Errorf("Seen(%s): got %s %v, want %s true", evB, id, ok, b.ID)
	}
	if got := names(x.Snapshot(nil)); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Snapshot after Delete: got %v, want [b c]", got)
	}
	var empty taskindex.Index
	if got := empty.Snapshot(nil); got == nil {
		t.Errorf("Snapshot of an empty index: got nil, want an empty slice (it encodes as [])")
	}
}

// A snapshot is a value taken once: later Puts replace the stored task and leave it as it was.
func TestSnapshotDoesNotChange(t *testing.T) {
	var x taskindex.Index
	tk := task.Task{ID: uuid.New(), State: task.Running, Env: []string{"A=1"}}
	x.Put(tk, 0)
	snap := x.Snapshot(nil)
	next := tk.Clone()
	next.State, next.Env = task.Completed, append(next.Env, "B=2")
	x.Put(next, 0)
	if snap[0].State != task.Running || !slices.Equal(snap[0].Env, []string{"A=1"}) {
		t.Errorf("snapshot after a Put: got %v %v, want Running [A=1]", snap[0].State, snap[0].Env)
	}
}

func names(ts []task.Task) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

// PutEntry keeps the entry it is given, itself, in order and counted, after a Grow as without;
// one for a stored ID replaces it in its place.
func TestPutEntryKeepsTheEntry(t *testing.T) {
	var x taskindex.Index
	x.Grow(3, 3)
	a := &taskindex.Entry{Seq: 1, Task: task.Task{ID: uuid.New(), State: task.Running, Cpu: 1}}
	b := &taskindex.Entry{Seq: 2, Task: task.Task{ID: uuid.New(), State: task.Failed, Cpu: 2}}
	x.PutEntry(a)
	x.PutEntry(b)
	refs := x.Refs(nil)
	if len(refs) != 2 || refs[0] != &a.Task || refs[1] != &b.Task {
		t.Fatalf("Refs after PutEntry: got %v, want the entries' own tasks, a then b", refs)
	}
	a2 := &taskindex.Entry{Seq: 1, Task: task.Task{ID: a.Task.ID, State: task.Completed, Cpu: 1}}
	x.PutEntry(a2)
	if refs := x.Refs(nil); len(refs) != 2 || refs[0] != &a2.Task {
		t.Fatalf("Refs after replacing a: got %v, want a's new entry first", refs)
	}
	if got := x.Count(task.Running); got != 0 {
		t.Errorf("Count(Running) = %d, want 0 after the replacement", got)
	}
	if got := x.Claimed(uuid.Nil); got.CPU != 0 {
		t.Errorf("Claimed = %+v, want nothing: both tasks have ended", got)
	}
	x.See(uuid.New(), b.Task.ID)
	if got := x.EventsOf(b.Task.ID); len(got) != 1 {
		t.Errorf("EventsOf(b) after a Grow and a See: %v, want one", got)
	}
}
