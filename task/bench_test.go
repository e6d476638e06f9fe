package task_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// benchStates is every state, and one outside the table.
var benchStates = []task.State{task.Pending, task.Scheduled, task.Running, task.Completed, task.Failed, task.State(9)}

// benchSink keeps results alive so that the compiler cannot drop the work.
var benchSink int

// BenchmarkValidTransition asks about every pair of states (36 checks an op); the worker asks
// once or twice per task event.
func BenchmarkValidTransition(b *testing.B) {
	b.ReportAllocs()
	n := 0
	ops := 0
	for b.Loop() {
		for _, src := range benchStates {
			for _, dst := range benchStates {
				if task.ValidTransition(src, dst) {
					n++
				}
			}
		}
		ops++
	}
	benchSink = n
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ops*len(benchStates)*len(benchStates)), "ns/check")
}

// benchTask is a task as POST /tasks brings it: the README's example plus a command.
func benchTask() task.Task {
	return task.Task{
		ID:           uuid.New(),
		Name:         "hello",
		State:        task.Scheduled,
		Image:        "cube-echo:latest",
		Memory:       64 << 20,
		ExposedPorts: task.PortSet{"7777/tcp": {}},
		Env:          []string{"GREETING=hi"},
		Cmd:          []string{"--listen", ":7777"},
	}
}

// BenchmarkValidate is the spec check every POST /tasks makes (image reference, name, env).
func BenchmarkValidate(b *testing.B) {
	t := benchTask()
	b.ReportAllocs()
	for b.Loop() {
		if err := t.Validate(); err != nil {
			b.Fatalf("Validate: got %v, want nil", err)
		}
	}
}

// BenchmarkClone is the deep copy the store makes on every Get, Put and, per task, List.
func BenchmarkClone(b *testing.B) {
	t := benchTask()
	t.HostPorts = task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}}}
	b.ReportAllocs()
	for b.Loop() {
		c := t.Clone()
		benchSink += len(c.Cmd)
	}
}

// benchListTasks returns n tasks as GET /tasks shows them in cube-bench's scale phase: echo
// tasks Running, with their published ports and the records of their start, or tasks whose
// pull was refused, Failed with the error and its records.
func benchListTasks(n int, state task.State) []task.Task {
	start := time.Date(2026, 12, 1, 15, 31, 7, 123456789, time.UTC)
	list := make([]task.Task, n)
	for i := range list {
		at := start.Add(time.Duration(i) * 37 * time.Millisecond)
		t := task.Task{
			ID:           uuid.New(),
			Name:         fmt.Sprintf("scale-%d", i),
			State:        state,
			Image:        "cube-echo:latest",
			ExposedPorts: task.PortSet{"7777/tcp": {}},
			Cmd:          []string{"--listen", ":7777"},
			LastEvent:    uuid.NewString(),
		}
		t.AddRecord(at, task.RecordReceived, "")
		if state == task.Running {
			t.ContainerID = fmt.Sprintf("%064x", i*7919+1)
			t.StartTime = at.Add(212 * time.Millisecond)
			t.HostPorts = task.PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: fmt.Sprint(32768 + i)}, {HostIP: "::", HostPort: fmt.Sprint(32768 + i)}}}
			t.AddRecord(at.Add(150*time.Millisecond), task.RecordCreated, "container %.12s", t.ContainerID)
			t.AddRecord(t.StartTime, task.RecordStarted, "")
		} else {
			t.Image = "127.0.0.1:1/refused:latest"
			t.Error = `pull 127.0.0.1:1/refused:latest: Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`
			t.ExitCode = 125
			t.FinishTime = at.Add(351 * time.Millisecond)
			t.AddRecord(at.Add(2*time.Millisecond), task.RecordPulling, "127.0.0.1:1/refused:latest")
			t.AddRecord(t.FinishTime, task.RecordFailed, "%s", t.Error)
		}
		list[i] = t
	}
	return list
}

// BenchmarkAppendJSON encodes 1,000 tasks, Running or Failed, one at a time as GET /tasks does:
// with AppendJSON into a reused buffer, and with json.Marshal. The ratio sub-benchmark does both
// in each iteration, taking turns, and reports AppendJSON's time over json.Marshal's.
func BenchmarkAppendJSON(b *testing.B) {
	appendAll := func(buf []byte, list []task.Task) []byte {
		for i := range list {
			var err error
			if buf, err = task.AppendJSON(buf[:0], &list[i]); err != nil {
				b.Fatal(err)
			}
		}
		return buf
	}
	marshalAll := func(list []task.Task) (n int) {
		for i := range list {
			out, err := json.Marshal(&list[i])
			if err != nil {
				b.Fatal(err)
			}
			n += len(out)
		}
		return n
	}
	for _, state := range []task.State{task.Running, task.Failed} {
		list := benchListTasks(1000, state)
		size := marshalAll(list)
		b.Run(fmt.Sprintf("tasks=1000/%s/AppendJSON", state), func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendAll(buf, list)
			}
		})
		b.Run(fmt.Sprintf("tasks=1000/%s/json.Marshal", state), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				benchSink += marshalAll(list)
			}
		})
		b.Run(fmt.Sprintf("tasks=1000/%s/ratio", state), func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			var ours, theirs time.Duration
			for b.Loop() {
				t0 := time.Now()
				buf = appendAll(buf, list)
				t1 := time.Now()
				benchSink += marshalAll(list)
				ours, theirs = ours+t1.Sub(t0), theirs+time.Since(t1)
			}
			b.ReportMetric(float64(ours)/float64(theirs), "AppendJSON/Marshal")
		})
	}
}
