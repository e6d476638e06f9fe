package task_test

import (
	"testing"

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
