// Package taskindex is the in-memory index both of the worker's stores keep (worker.MemoryStore
// and boltstore.Store): the tasks by ID in the order they were first stored, the event IDs
// accepted for each task, and running sums over the tasks, kept as they change: what the tasks
// that have not ended claim (cores and memory), and how many tasks are in each state. With the
// sums, the worker's admission check and its Running count cost O(1), not a walk of every task.
//
// An Index is not safe for concurrent use: its store guards it with its own lock.
//
// The tasks it holds are immutable values: Put takes a task that no one else holds (a deep copy,
// or one freshly decoded) and never changes it after; a task is replaced whole, never changed in
// place. So Snapshot can hand out shallow copies whose maps, slices and pointers are the stored
// task's own: no writer ever touches them, and readers may read them at any time without a lock.
package taskindex

import (
	"math"
	"math/bits"
	"slices"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Entry is a stored task and the sequence number its store keeps with it (the boltstore's
// insertion sequence; MemoryStore keeps 0).
type Entry struct {
	Seq  uint64
	Task task.Task
}

// Index holds tasks, their insertion order, the event IDs seen for them, and sums over them. The
// zero value is ready to use.
type Index struct {
	tasks  map[uuid.UUID]*Entry      // never changed once stored: Put stores a new Entry
	order  []uuid.UUID               // task IDs in the order they were first stored
	seen   map[uuid.UUID]uuid.UUID   // event ID → task ID
	events map[uuid.UUID][]uuid.UUID // task ID → the event IDs seen for it, so Delete is O(its events)
	states [task.Failed + 1]int      // tasks per state; a State past Failed counts in other
	other  int
	claims sums // of the tasks that have not ended
}

// Get returns the stored entry of the task with the given ID, and whether there is one. Its
// task's maps and slices are the stored ones: the caller must not write them.
func (x *Index) Get(id uuid.UUID) (Entry, bool) {
	e, ok := x.tasks[id]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Put stores t with seq, replacing any task with its ID; a replaced task keeps its place in the
// order. t becomes the index's: the caller must neither keep nor change its maps and slices.
func (x *Index) Put(t task.Task, seq uint64) {
	x.PutEntry(&Entry{Seq: seq, Task: t})
}

// PutEntry is Put of e.Task with e.Seq that stores e itself, not a copy: e becomes the index's,
// and neither it nor its task's maps and slices may be changed or kept by the caller. A store
// loading thousands of tasks decodes each into an Entry of its own and hands it over.
func (x *Index) PutEntry(e *Entry) {
	if x.tasks == nil {
		x.tasks = make(map[uuid.UUID]*Entry)
	}
	id := e.Task.ID
	if old, ok := x.tasks[id]; ok {
		x.count(old.Task, -1)
	} else {
		x.order = append(x.order, id)
	}
	x.tasks[id] = e
	x.count(e.Task, +1)
}

// Grow makes room for tasks more tasks and events more event IDs, so that a store loading them
// does not grow the maps and the order step by step (each step's old table is garbage).
func (x *Index) Grow(tasks, events int) {
	if x.tasks == nil {
		x.tasks = make(map[uuid.UUID]*Entry, tasks)
	}
	if x.seen == nil {
		x.seen = make(map[uuid.UUID]uuid.UUID, events)
		x.events = make(map[uuid.UUID][]uuid.UUID, events)
	}
	x.order = slices.Grow(x.order, tasks)
}

// count adds (n = 1) or takes away (n = -1) t from the sums.
func (x *Index) count(t task.Task, n int) {
	if int(t.State) >= 0 && int(t.State) < len(x.states) {
		x.states[t.State] += n
	} else {
		x.other += n
	}
	if !t.State.Ended() {
		x.claims.add(t, n)
	}
}

// Delete forgets the task with the given ID and the event IDs seen for it, and returns those
// event IDs; an unknown ID does nothing. It costs O(tasks) for the order, O(1) per event.
func (x *Index) Delete(id uuid.UUID) []uuid.UUID {
	e, ok := x.tasks[id]
	if !ok {
		return nil
	}
	x.count(e.Task, -1)
	delete(x.tasks, id)
	if i := slices.Index(x.order, id); i >= 0 {
		x.order = slices.Delete(x.order, i, i+1)
	}
	evs := x.events[id]
	delete(x.events, id)
	for _, ev := range evs {
		delete(x.seen, ev)
	}
	return evs
}

// EventsOf returns the event IDs seen for the task with the given ID. The slice is the index's:
// the caller must not change it.
func (x *Index) EventsOf(id uuid.UUID) []uuid.UUID { return x.events[id] }

// See records event ID ev as accepted for the task taskID. An event ID already seen for another
// task moves to taskID.
func (x *Index) See(ev, taskID uuid.UUID) {
	if x.seen == nil {
		x.seen = make(map[uuid.UUID]uuid.UUID)
		x.events = make(map[uuid.UUID][]uuid.UUID)
	}
	if old, ok := x.seen[ev]; ok {
		if old == taskID {
			return
		}
		x.events[old] = slices.DeleteFunc(x.events[old], func(e uuid.UUID) bool { return e == ev })
		if len(x.events[old]) == 0 {
			delete(x.events, old)
		}
	}
	x.seen[ev] = taskID
	x.events[taskID] = append(x.events[taskID], ev)
}

// Seen returns the task an event ID was accepted for, and whether it was.
func (x *Index) Seen(ev uuid.UUID) (uuid.UUID, bool) {
	id, ok := x.seen[ev]
	return id, ok
}

// Len returns the number of tasks.
func (x *Index) Len() int { return len(x.tasks) }

// Snapshot appends every task in order to dst as a shallow copy, and returns the extended
// slice: each Task is a value of its own (its fields may be set), but its maps, slices and
// pointers are the stored task's, which no one writes. The caller must not write through them.
// It never returns nil.
func (x *Index) Snapshot(dst []task.Task) []task.Task {
	if dst == nil {
		dst = make([]task.Task, 0, len(x.order)) // never nil: an empty list encodes as [], not null
	}
	dst = slices.Grow(dst, len(x.order))
	for _, id := range x.order {
		dst = append(dst, x.tasks[id].Task)
	}
	return dst
}

// Refs appends a pointer to every stored task to dst, in order, and returns the extended slice.
// The tasks are immutable (a Put stores a new one), so the pointers stay valid and what they point
// to never changes; no one may write through them. It copies 8 bytes a task, not the task.
func (x *Index) Refs(dst []*task.Task) []*task.Task {
	dst = slices.Grow(dst, len(x.order))
	for _, id := range x.order {
		dst = append(dst, &x.tasks[id].Task)
	}
	return dst
}

// Clones returns a deep copy of every task, in order.
func (x *Index) Clones() []task.Task {
	out := make([]task.Task, len(x.order))
	for i, id := range x.order {
		out[i] = x.tasks[id].Task.Clone()
	}
	return out
}

// Entries calls f with every entry in order, until f returns false. f must not change the index
// or write through the task's maps and slices.
func (x *Index) Entries(f func(Entry) bool) {
	for _, id := range x.order {
		if !f(*x.tasks[id]) {
			return
		}
	}
}

// Count returns the number of tasks in state s.
func (x *Index) Count(s task.State) int {
	if int(s) >= 0 && int(s) < len(x.states) {
		return x.states[s]
	}
	n := 0
	for _, e := range x.tasks {
		if e.Task.State == s {
			n++
		}
	}
	return n
}

// Claims is what a set of tasks claims in all. Its sums saturate: however many tasks claim
// however much, they never wrap around to look small.
type Claims struct {
	CPU    float64 // cores; +Inf when a claim is not a number
	Memory int64   // bytes; at most math.MaxInt64
}

// Claimed returns what the tasks that have not ended claim, leaving out the task with the ID
// except (uuid.Nil leaves out none), in O(1). The sums are exact: a task's claim is taken away
// as exactly as it was added, however many came and went.
func (x *Index) Claimed(except uuid.UUID) Claims {
	s := x.claims
	if e, ok := x.tasks[except]; ok && !e.Task.State.Ended() {
		s.add(e.Task, -1)
	}
	return s.claims()
}

// maxNanoCores is the largest claim summed exactly, in billionths of a core (task.MaxCpu cores):
// 10^18 fits an int64, and a 128-bit sum of them cannot overflow.
const maxNanoCores = 1e18

// sums are running sums of claims that can be taken away again exactly: memory and cores (in
// billionths) as 128-bit integers, and claims too large or not numbers at all counted apart.
type sums struct {
	memHi, memLo   uint64  // the sum of positive memory claims
	nanoHi, nanoLo uint64  // the sum of positive CPU claims up to maxNanoCores, in billionths of a core
	infCPU         int     // NaN or +Inf CPU claims
	hugeCPU        int     // finite CPU claims past maxNanoCores
	hugeSum        float64 // those, summed
}

func (s *sums) add(t task.Task, n int) {
	if t.Memory > 0 {
		s.memHi, s.memLo = add128(s.memHi, s.memLo, uint64(t.Memory), n)
	}
	switch c := t.Cpu; {
	case math.IsNaN(c) || math.IsInf(c, 1):
		s.infCPU += n
	case c > 0 && c*1e9 <= maxNanoCores:
		s.nanoHi, s.nanoLo = add128(s.nanoHi, s.nanoLo, uint64(math.Round(c*1e9)), n)
	case c > 0:
		s.hugeCPU += n
		s.hugeSum += float64(n) * c
	}
	if s.hugeCPU == 0 {
		s.hugeSum = 0 // what the float sum of huge claims lost in rounding goes with the last of them
	}
}

// add128 adds (n = 1) or subtracts (n = -1) v from the 128-bit number hi:lo.
func add128(hi, lo, v uint64, n int) (uint64, uint64) {
	var c uint64
	if n > 0 {
		lo, c = bits.Add64(lo, v, 0)
		hi += c
	} else {
		lo, c = bits.Sub64(lo, v, 0)
		hi -= c
	}
	return hi, lo
}

func (s sums) claims() Claims {
	var c Claims
	if s.memHi > 0 || s.memLo > math.MaxInt64 {
		c.Memory = math.MaxInt64
	} else {
		c.Memory = int64(s.memLo)
	}
	c.CPU = (float64(s.nanoHi)*(1<<64) + float64(s.nanoLo)) / 1e9
	if s.hugeCPU > 0 {
		c.CPU += s.hugeSum // a float sum overflows to +Inf, which claims everything too
	}
	if s.infCPU > 0 {
		c.CPU = math.Inf(1) // a claim that is not a number claims everything, never nothing
	}
	return c
}

// EachSeen calls f with every event ID seen and the task it was accepted for, in no order.
func (x *Index) EachSeen(f func(ev, taskID uuid.UUID)) {
	for ev, id := range x.seen {
		f(ev, id)
	}
}
