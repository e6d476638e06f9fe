package worker

import (
	"encoding/json"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// fullTask returns a task with every map and slice set.
func fullTask() task.Task {
	return task.Task{
		ID:           uuid.New(),
		Name:         "web",
		State:        task.Running,
		Image:        "cube-echo:latest",
		ExposedPorts: task.PortSet{"7777/tcp": {}},
		PortBindings: map[string]string{"7777/tcp": "8080"},
		HostPorts:    task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "8080"}}},
		StartTime:    time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		Env:          []string{"A=1"},
		Cmd:          []string{"--listen", ":7777"},
	}
}

// scribble changes every map and slice of t in place.
func scribble(t task.Task) {
	t.ExposedPorts["1/tcp"] = struct{}{}
	t.PortBindings["7777/tcp"] = "1"
	t.HostPorts["7777/tcp"][0].HostPort = "1"
	t.HostPorts["2/tcp"] = nil
	t.Env[0] = "A=changed"
	t.Cmd[0] = "changed"
}

func TestMemoryStoreCopies(t *testing.T) {
	var s MemoryStore
	orig := fullTask()
	want := orig.Clone()
	if err := s.Put(orig); err != nil {
		t.Fatalf("Put: got %v, want nil", err)
	}

	tests := []struct {
		name string
		get  func() task.Task
	}{
		{"the task given to Put", func() task.Task { return orig }},
		{"a task from Get", func() task.Task { got, _ := s.Get(want.ID); return got }},
		{"a task from List", func() task.Task { return s.List()[0] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scribble(tt.get())
			got, ok := s.Get(want.ID)
			if !ok {
				t.Fatalf("Get: got no task, want %s", want.ID)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("stored task after changing %s:\ngot  %+v\nwant %+v", tt.name, got, want)
			}
		})
	}
}

func TestMemoryStoreGetUnknown(t *testing.T) {
	var s MemoryStore
	if got, ok := s.Get(uuid.New()); ok || got.ID != uuid.Nil {
		t.Errorf("Get on an empty store: got %+v, %v, want the zero task and false", got, ok)
	}
	if got := s.List(); got == nil || len(got) != 0 {
		t.Errorf("List on an empty store: got %#v, want an empty non-nil slice", got)
	}
	if n := s.Len(); n != 0 {
		t.Errorf("Len on an empty store: got %d, want 0", n)
	}
}

func TestMemoryStoreOrder(t *testing.T) {
	var s MemoryStore
	a, b, c := fullTask(), fullTask(), fullTask()
	for _, tk := range []task.Task{a, b, c} {
		if err := s.Put(tk); err != nil {
			t.Fatalf("Put: got %v, want nil", err)
		}
	}
	// Replacing a task keeps its place.
	b.State = task.Completed
	if err := s.Put(b); err != nil {
		t.Fatalf("Put: got %v, want nil", err)
	}

	var got []uuid.UUID
	for _, tk := range s.List() {
		got = append(got, tk.ID)
	}
	if want := []uuid.UUID{a.ID, b.ID, c.ID}; !reflect.DeepEqual(got, want) {
		t.Errorf("List order: got %v, want first-Put order %v", got, want)
	}
	if n := s.Len(); n != 3 {
		t.Errorf("Len: got %d, want 3", n)
	}
	if stored, _ := s.Get(b.ID); stored.State != task.Completed {
		t.Errorf("replaced task's state: got %v, want Completed", stored.State)
	}
}

func TestMemoryStoreConcurrent(t *testing.T) {
	// Run under -race: readers change what they get while writers put.
	var s MemoryStore
	const writers, puts = 4, 50
	ids := make([][]uuid.UUID, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range puts {
				tk := fullTask()
				ids[i] = append(ids[i], tk.ID)
				if err := s.Put(tk); err != nil {
					t.Errorf("Put: got %v, want nil", err)
					return
				}
				tk.State = task.Completed
				if err := s.Put(tk); err != nil {
					t.Errorf("Put: got %v, want nil", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range puts {
				for _, tk := range s.List() {
					scribble(tk)
					if got, ok := s.Get(tk.ID); ok {
						scribble(got)
					}
				}
				_ = s.Len()
			}
		}()
	}
	wg.Wait()

	if n := s.Len(); n != writers*puts {
		t.Fatalf("Len: got %d, want %d", n, writers*puts)
	}
	pos := make(map[uuid.UUID]int)
	for i, tk := range s.List() {
		pos[tk.ID] = i
		if tk.State != task.Completed || tk.Env[0] != "A=1" || tk.HostPorts["7777/tcp"][0].HostPort != "8080" {
			t.Errorf("task %s: got state %v Env %v HostPorts %v, want Completed and unchanged maps and slices",
				tk.ID, tk.State, tk.Env, tk.HostPorts)
		}
	}
	// Each writer's tasks keep the order it put them in.
	for w, list := range ids {
		for j := 1; j < len(list); j++ {
			if pos[list[j-1]] >= pos[list[j]] {
				t.Errorf("writer %d: task %d listed at %d, after task %d at %d; want first-Put order",
					w, j-1, pos[list[j-1]], j, pos[list[j]])
			}
		}
	}
}

// Lists are shallow: they share the stored tasks' maps and slices. Encoding lists while the loop
// moves every task through its states must not race (go test -race) and must see each task
// whole, and the Running count kept by the store must agree with the tasks.
func TestListWhileTasksChange(t *testing.T) {
	_, w := newWorker(t)
	var specs []task.Task
	for range 30 {
		spec := newTask()
		spec.Health = &task.HealthSpec{Type: task.HealthTCP, Interval: task.Duration(time.Hour)}
		specs = append(specs, spec)
		submit(t, w, eventFor(spec))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				for _, tk := range w.List() {
					tk.RegistryAuth = nil // as GET /tasks redacted: a field of the list's own value
					if _, err := json.Marshal(tk); err != nil {
						t.Errorf("encode a listed task: %v", err)
						return
					}
				}
				if err := w.Each(func(tk *task.Task) error {
					tk.RegistryAuth = nil // as GET /tasks redacts: a field of Each's copy
					_, err := json.Marshal(tk)
					return err
				}); err != nil {
					t.Errorf("encode the tasks Each gives: %v", err)
					return
				}
			}
		}()
	}
	for _, spec := range specs {
		waitState(t, w, spec.ID, task.Running)
	}
	if s, err := w.Stats(); err != nil || s.TaskCount != 30 {
		t.Errorf("Stats with 30 Running: got %d, %v, want 30", s.TaskCount, err)
	}
	for _, spec := range specs[:10] {
		if err := w.Stop(spec.ID); err != nil {
			t.Fatalf("Stop: got %v, want nil", err)
		}
	}
	for _, spec := range specs[:10] {
		waitState(t, w, spec.ID, task.Completed)
	}
	close(done)
	wg.Wait()
	running := 0
	for _, tk := range w.List() {
		if tk.State == task.Running {
			running++
		}
	}
	var each []task.Task
	if err := w.Each(func(tk *task.Task) error { each = append(each, tk.Clone()); return nil }); err != nil {
		t.Fatal(err)
	}
	if list := w.List(); !reflect.DeepEqual(each, list) {
		t.Errorf("Each gave %d tasks, List %d: want the same tasks, in the same order", len(each), len(list))
	}
	if s, err := w.Stats(); err != nil || s.TaskCount != running || running != 20 {
		t.Errorf("Stats after 10 stops: got %d, %v, want the %d Running tasks listed (20)", s.TaskCount, err, running)
	}
}
