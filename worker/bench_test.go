package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// benchTask returns a task as the store holds it once it runs: every map and slice set.
func benchTask() task.Task {
	id := uuid.New()
	return task.Task{
		ID:           id,
		ContainerID:  "4f3c2b1a0f9e8d7c6b5a4f3c2b1a0f9e8d7c6b5a4f3c2b1a0f9e8d7c6b5a4f3c",
		Name:         "web-" + id.String()[:8], // names of tasks that have not ended are unique
		State:        task.Running,
		Image:        "cube-echo:latest",
		Memory:       64 << 20,
		ExposedPorts: task.PortSet{"7777/tcp": {}},
		HostPorts:    task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}}},
		StartTime:    time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		Env:          []string{"GREETING=hi"},
		Cmd:          []string{"--listen", ":7777"},
	}
}

// benchStore returns a MemoryStore holding n tasks, and their IDs.
func benchStore(b *testing.B, n int) (*worker.MemoryStore, []task.Task) {
	b.Helper()
	s := &worker.MemoryStore{}
	tasks := make([]task.Task, n)
	for i := range tasks {
		tasks[i] = benchTask()
		if err := s.Put(tasks[i]); err != nil {
			b.Fatalf("Put: got %v, want nil", err)
		}
	}
	return s, tasks
}

var benchSink atomic.Int64

// BenchmarkMemoryStore measures the store under concurrent readers and writers: 4 goroutines per
// CPU, over 1,000 tasks. The API reads (Get for GET /tasks/{id}, List for GET /tasks) while the
// worker's lanes write (Put on every state change).
func BenchmarkMemoryStore(b *testing.B) {
	const n = 1000
	cases := []struct {
		name string
		op   func(s *worker.MemoryStore, tasks []task.Task, i int)
	}{
		{"Get", func(s *worker.MemoryStore, tasks []task.Task, i int) {
			t, _ := s.Get(tasks[i%n].ID)
			benchSink.Add(int64(t.State))
		}},
		{"Put", func(s *worker.MemoryStore, tasks []task.Task, i int) {
			_ = s.Put(tasks[i%n])
		}},
		{"Get90Put10", func(s *worker.MemoryStore, tasks []task.Task, i int) {
			if i%10 == 0 {
				_ = s.Put(tasks[i%n])
				return
			}
			t, _ := s.Get(tasks[i%n].ID)
			benchSink.Add(int64(t.State))
		}},
		// One List of all 1,000 tasks in every 100 operations, the rest split as above: an API
		// client polling GET /tasks while others poll single tasks and the lanes write.
		{"List1Get89Put10", func(s *worker.MemoryStore, tasks []task.Task, i int) {
			switch {
			case i%100 == 0:
				benchSink.Add(int64(len(s.List())))
			case i%10 == 0:
				_ = s.Put(tasks[i%n])
			default:
				t, _ := s.Get(tasks[i%n].ID)
				benchSink.Add(int64(t.State))
			}
		}},
		{"List", func(s *worker.MemoryStore, tasks []task.Task, i int) {
			benchSink.Add(int64(len(s.List())))
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s, tasks := benchStore(b, n)
			var seed atomic.Int64
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919)) // each goroutine starts elsewhere in the store
				for pb.Next() {
					c.op(s, tasks, i)
					i++
				}
			})
		})
	}
}

// BenchmarkSubmit is Worker.Submit, the work behind POST /tasks minus HTTP, with the worker
// loop applying the starts on a fake runtime meanwhile. Every 5,000 submits the worker is
// replaced (outside the timer), so the store does not grow without bound.
func BenchmarkSubmit(b *testing.B) {
	const chunk = 5000
	log := slog.New(slog.DiscardHandler)
	var (
		w    *worker.Worker
		stop func()
	)
	start := func() {
		w = worker.New(workertest.New(), worker.Config{Name: "bench", Logger: log})
		stop = workertest.Run(b, w)
	}
	t := benchTask()
	t.State = task.Scheduled
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	b.ReportAllocs()
	start()
	i := 0
	for b.Loop() {
		if i > 0 && i%chunk == 0 {
			b.StopTimer()
			stop()
			start()
			b.StartTimer()
		}
		i++
		t.ID = uuid.New()
		t.Name = "web-" + strconv.Itoa(i) // names of tasks that have not ended are unique
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatalf("Submit #%d: got %v, want nil", i, err)
		}
	}
	b.StopTimer()
	stop()
}

// BenchmarkList is Worker.List with 100 to 10,000 tasks: what GET /tasks does before it encodes.
// The list is shallow (Store.Snapshot): it copies each Task value, none of its maps and slices.
func BenchmarkList(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			s, _ := benchStore(b, n)
			w := worker.New(workertest.New(), worker.Config{Store: s, Logger: slog.New(slog.DiscardHandler)})
			b.ReportAllocs()
			for b.Loop() {
				benchSink.Add(int64(len(w.List())))
			}
		})
	}
}

// BenchmarkSubmitTracked is Worker.Submit with a capacity to check, on a worker that already
// tracks n tasks, most of them ended (one in ten Running, each claiming 0.01 cores and 64 MiB), in
// memory and in a bbolt store (fsync off, so that the disk's noise does not hide the worker's own
// cost). The admission check and the Running count come from the store's running sums: the cost
// per submit must not grow with n (it walked and deep-copied every task before).
func BenchmarkSubmitTracked(b *testing.B) {
	for _, n := range []int{100, 10000} {
		for _, durable := range []bool{false, true} {
			name := fmt.Sprintf("tasks=%d/memory", n)
			if durable {
				name = fmt.Sprintf("tasks=%d/bolt-nosync", n)
			}
			b.Run(name, func(b *testing.B) { benchSubmitTracked(b, n, durable) })
		}
	}
}

func benchSubmitTracked(b *testing.B, n int, durable bool) {
	const chunk = 2000
	log := slog.New(slog.DiscardHandler)
	var (
		w    *worker.Worker
		stop func()
	)
	start := func() {
		var store worker.Store = &worker.MemoryStore{}
		if durable {
			s, err := boltstore.Open(b.TempDir()+"/cube.db", boltstore.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			store = s
		}
		for i := range n - n/10 { // ended: no container, nothing claimed
			t := benchTask()
			t.Name = "ended-" + strconv.Itoa(i)
			t.State, t.ContainerID, t.HostPorts = task.Completed, "", nil
			if err := store.Put(t); err != nil {
				b.Fatal(err)
			}
		}
		w = worker.New(workertest.New(), worker.Config{Name: "bench", Logger: log, Store: store, MaxTasks: 1 << 20,
			Retention: worker.Retention{KeepEnded: 1 << 20}, Capacity: worker.Capacity{CPU: 1e6, Memory: 1 << 60}})
		stopWorker := workertest.Run(b, w)
		var running []uuid.UUID
		for i := range n / 10 { // Running, through the worker, each claiming 0.01 cores and 64 MiB
			t := benchTask()
			t.State, t.Cpu, t.ContainerID, t.HostPorts = task.Scheduled, 0.01, "", nil
			t.Name = "running-" + strconv.Itoa(i)
			if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
				b.Fatal(err)
			}
			running = append(running, t.ID)
		}
		deadline := time.Now().Add(30 * time.Second)
		for _, id := range running {
			for {
				if got, err := w.Get(id); err == nil && got.State == task.Running {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("task %s not Running after 30s", id)
				}
				time.Sleep(time.Millisecond)
			}
		}
		stop = func() {
			stopWorker()
			store.Close()
		}
	}
	t := benchTask()
	t.State, t.Cpu = task.Scheduled, 0.01
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	start()
	if s, err := w.Stats(); err != nil || s.TaskCount != n/10 {
		b.Fatalf("Stats: got %d Running, %v, want %d", s.TaskCount, err, n/10)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i > 0 && i%chunk == 0 {
			b.StopTimer()
			stop()
			start()
			b.StartTimer()
		}
		i++
		t.ID = uuid.New()
		t.Name = "web-" + strconv.Itoa(i)
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatalf("Submit #%d: got %v, want nil", i, err)
		}
		if i%16 == 0 {
			if _, err := w.Stats(); err != nil { // GET /stats, which counts the Running tasks
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	stop()
}

// BenchmarkSubmitAtMaxTasks is Worker.Submit of a task that fails at once, with the worker
// already tracking n ended tasks: "room" has MaxTasks to spare, "full" is at MaxTasks, so every
// submit must first forget the oldest ended task. Each op waits until its task has failed, so
// that the next submit finds an ended task to forget.
func BenchmarkSubmitAtMaxTasks(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, full := range []bool{false, true} {
			name := fmt.Sprintf("tasks=%d/room", n)
			maxTasks := 1 << 20
			if full {
				name, maxTasks = fmt.Sprintf("tasks=%d/full", n), n
			}
			b.Run(name, func(b *testing.B) { benchSubmitFailing(b, n, maxTasks) })
		}
	}
}

func benchSubmitFailing(b *testing.B, n, maxTasks int) {
	rt := workertest.New()
	// Every start fails: the tasks end Failed without a container, so they may be forgotten.
	rt.StartHook = func(context.Context, task.Task) error {
		return task.Errorf(task.ENOTFOUND, "image pull failed")
	}
	w := worker.New(rt, worker.Config{Name: "bench", Logger: slog.New(slog.DiscardHandler), MaxTasks: maxTasks})
	workertest.Run(b, w)
	t := benchTask()
	t.State = task.Scheduled
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	submitAndWait := func() {
		t.ID = uuid.New()
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatalf("Submit: got %v, want nil", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := w.Get(t.ID)
			if err == nil && got.State == task.Failed {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("task %s: got state %v after 10s, want Failed", t.ID, got.State)
			}
			runtime.Gosched()
		}
	}
	for range n {
		submitAndWait()
	}
	b.ReportAllocs()
	for b.Loop() {
		submitAndWait()
	}
}

// benchStores are the stores the worker benchmarks run on: in memory, and a bbolt store on disk
// with fsync on.
var benchStores = []struct {
	name string
	open func(b *testing.B) worker.Store
}{
	{"memory", func(*testing.B) worker.Store { return &worker.MemoryStore{} }},
	{"disk", func(b *testing.B) worker.Store {
		s, err := boltstore.OpenDir(b.TempDir(), boltstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}},
}

// BenchmarkStartToRunning is what the worker adds to a start, submit to Running, on a fake
// runtime that takes no time, with its state in memory and in a bbolt store on disk (fsync on):
// one start at a time, and bursts of 20 at once, whose writes share transactions.
func BenchmarkStartToRunning(b *testing.B) {
	for _, st := range benchStores {
		for _, n := range []int{1, 20} {
			b.Run(fmt.Sprintf("%s/starts=%d", st.name, n), func(b *testing.B) {
				w := worker.New(workertest.New(), worker.Config{Name: "bench", Logger: slog.New(slog.DiscardHandler),
					Store: st.open(b), MaxTasks: 1 << 20, Concurrency: 20})
				workertest.Run(b, w)
				_, changes, stop := w.Changes(w.LastChange())
				defer stop()
				t := benchTask()
				t.State = task.Scheduled
				t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
				for b.Loop() {
					ids := make(map[uuid.UUID]bool, n)
					for range n {
						t.ID = uuid.New()
						t.Name = "web-" + t.ID.String() // names of tasks that have not ended are unique
						ids[t.ID] = true
						if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
							b.Fatal(err)
						}
					}
					for len(ids) > 0 {
						c, ok := <-changes
						if !ok {
							b.Fatal("the change stream fell behind")
						}
						if c.State == task.Running {
							delete(ids, c.TaskID)
						}
					}
				}
			})
		}
	}
}

// BenchmarkQueuedStarts is what a start queued for a start slot costs while it waits: n starts
// submitted to a worker with one slot, held by a start that does not return, on a fake runtime,
// with the state in memory and on disk. It reports the live heap (after a GC), the goroutine
// stacks and the goroutines that the n queued starts add, per queued start. The heap bytes
// include the task's own stored record (which it keeps once it has ended) and its stored order;
// a queued start holds no goroutine, so no stack.
func BenchmarkQueuedStarts(b *testing.B) {
	for _, st := range benchStores {
		for _, n := range []int{1000, 5000} {
			if st.name == "disk" && n > 1000 {
				continue // each submit is an fsync: 1,000 say as much as 5,000
			}
			b.Run(fmt.Sprintf("%s/queued=%d", st.name, n), func(b *testing.B) {
				var q queued
				for b.Loop() {
					q = queueStarts(b, st.open(b), n)
				}
				b.ReportMetric(q.heap/float64(n), "heap-B/queued-start")
				b.ReportMetric(q.stack/float64(n), "stack-B/queued-start")
				b.ReportMetric(q.goroutines/float64(n), "goroutines/queued-start")
			})
		}
	}
}

// queued is what queued starts add to a worker.
type queued struct{ heap, stack, goroutines float64 }

// queueStarts queues n starts behind a held one on a new worker with one start slot, and returns
// what they added once every one waits for the slot.
func queueStarts(b *testing.B, store worker.Store, n int) queued {
	b.Helper()
	rt := workertest.New()
	release := make(chan struct{})
	rt.StartHook = func(ctx context.Context, _ task.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	w := worker.New(rt, worker.Config{Name: "bench", Logger: slog.New(slog.DiscardHandler), Store: store,
		Concurrency: 1, MaxQueue: n + 1, MaxTasks: n + 1})
	stop := workertest.Run(b, w)
	defer stop()
	defer close(release) // before stop: the held start holds up Run's return
	t := benchTask()
	t.State = task.Scheduled
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	submit := func(i int) {
		t.ID = uuid.New()
		t.Name = "web-" + strconv.Itoa(i) // names of tasks that have not ended are unique
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatalf("Submit #%d: got %v, want nil", i, err)
		}
	}
	settle := func(queued int) (runtime.MemStats, int) {
		deadline := time.Now().Add(time.Minute)
		for w.QueueLen() != queued || len(rt.Starts()) != 1 {
			if time.Now().After(deadline) {
				b.Fatalf("QueueLen %d, starts under way %d: want %d queued behind 1", w.QueueLen(), len(rt.Starts()), queued)
			}
			time.Sleep(time.Millisecond)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms, runtime.NumGoroutine()
	}
	submit(0)
	m0, g0 := settle(0)
	for i := 1; i <= n; i++ {
		submit(i)
	}
	m1, g1 := settle(n)
	return queued{
		heap:       float64(m1.HeapAlloc) - float64(m0.HeapAlloc),
		stack:      float64(m1.StackInuse) - float64(m0.StackInuse),
		goroutines: float64(g1 - g0),
	}
}

// BenchmarkTracked is what a tracked task that has ended costs the worker while it keeps it: n
// tasks whose start fails at once (as a refused pull does, no container), on a fake runtime, with
// the state in a bbolt store (no fsync: the bytes, not the time, are measured). It reports the
// live heap (after a GC) that the n Failed tasks add, per task: the stored task and its records,
// the index's entries for it (order, event IDs), and its share of the change stream's backlog.
func BenchmarkTracked(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("tracked=%d", n), func(b *testing.B) {
			var heap float64
			for b.Loop() {
				heap = trackFailed(b, n)
			}
			b.ReportMetric(heap/float64(n), "heap-B/tracked-task")
		})
	}
}

// refusedPulls is a fake runtime whose every start fails as a refused pull does. Its Start keeps
// nothing (the fake's own Start keeps a copy of every task it was given, for tests to read).
type refusedPulls struct{ *workertest.Runtime }

func (refusedPulls) Start(context.Context, task.Task, func(task.StartStep)) (task.Container, error) {
	return task.Container{}, &task.Error{Code: task.ENOTFOUND,
		Message: `image pull failed: 127.0.0.1:1/cube-echo:latest: Get "https://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`}
}

// trackFailed submits n starts that fail at once to a new worker on a bbolt store, waits until
// every one has Failed, and returns the live heap they added.
func trackFailed(b *testing.B, n int) float64 {
	b.Helper()
	rt := refusedPulls{workertest.New()}
	s, err := boltstore.OpenDir(b.TempDir(), boltstore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := worker.New(rt, worker.Config{Name: "bench", Logger: slog.New(slog.DiscardHandler), Store: s,
		Concurrency: 4, MaxQueue: n + 1, MaxTasks: n + 1, Retention: worker.Retention{KeepEnded: n + 1}})
	stop := workertest.Run(b, w)
	defer stop()
	heap := func() float64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	h0 := heap()
	t := benchTask()
	t.State = task.Scheduled
	t.Image = "127.0.0.1:1/cube-echo:latest"
	t.ContainerID, t.HostPorts, t.StartTime = "", nil, time.Time{}
	for i := range n {
		t.ID = uuid.New()
		t.Name = "web-" + strconv.Itoa(i)
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatalf("Submit #%d: got %v, want nil", i, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for s.Count(task.Failed) != n {
		if time.Now().After(deadline) {
			b.Fatalf("Failed %d, want %d", s.Count(task.Failed), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return heap() - h0
}
