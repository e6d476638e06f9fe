package worker

import (
	"math"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

func TestAdmit(t *testing.T) {
	const gib = int64(1) << 30
	node := Capacity{CPU: 2, Memory: 23*gib + gib/2} // 23.5 GiB, as on the machine of the report
	claimedOf := func(ts ...task.Task) taskindex.Claims {
		var x taskindex.Index
		for _, t := range ts {
			t.ID = uuid.New()
			x.Put(t, 0)
		}
		return x.Claimed(uuid.Nil)
	}
	tests := []struct {
		name     string
		capacity Capacity
		claimed  taskindex.Claims
		ask      task.Task
		want     string // a part of the message; "" to fit
	}{
		{"fits", node, claimedOf(task.Task{Memory: gib, Cpu: 1}), task.Task{Memory: gib, Cpu: 1}, ""},
		{"fits exactly", node, claimedOf(task.Task{Memory: node.Memory - gib}), task.Task{Memory: gib}, ""},
		{"float rounding forgiven", Capacity{CPU: 0.3}, claimedOf(task.Task{Cpu: 0.1}), task.Task{Cpu: 0.2}, ""},
		{"no claim fits anything", node, claimedOf(task.Task{Memory: node.Memory, Cpu: 2}), task.Task{}, ""},
		{"unlimited", Capacity{}, claimedOf(task.Task{Memory: math.MaxInt64}), task.Task{Memory: math.MaxInt64, Cpu: 1e9}, ""},

		// More than the node has at all: refused outright, whatever is claimed.
		{"max int64 memory with 1 GiB claimed", node, claimedOf(task.Task{Memory: gib}), task.Task{Memory: math.MaxInt64},
			"Task.Memory: 8388608.0 TiB is more than this worker has for tasks at all (23.5 GiB)"},
		{"30 GB on a 23.5 GiB node", node, taskindex.Claims{}, task.Task{Memory: 30e9},
			"Task.Memory: 27.9 GiB is more than this worker has for tasks at all"},
		{"one byte more than the node", node, taskindex.Claims{}, task.Task{Memory: node.Memory + 1}, "for tasks at all"},
		{"more cores than the node", node, taskindex.Claims{}, task.Task{Cpu: 2.5}, "Task.Cpu: 2.5 cores is more than this worker has for tasks at all (2 cores)"},
		{"huge cores", node, taskindex.Claims{}, task.Task{Cpu: 1e308}, "Task.Cpu: 1e+308 cores is more than"},
		{"NaN cores", node, taskindex.Claims{}, task.Task{Cpu: math.NaN()}, "Task.Cpu: NaN cores is more than"},
		{"infinite cores", node, taskindex.Claims{}, task.Task{Cpu: math.Inf(1)}, "Task.Cpu: +Inf cores is more than"},
		{"negative memory", node, taskindex.Claims{}, task.Task{Memory: -1}, "Task.Memory"},

		// Not enough free now.
		{"memory taken", node, claimedOf(task.Task{Memory: 20 * gib}), task.Task{Memory: 4 * gib},
			"Task.Memory: 4.0 GiB does not fit now: tasks claim 20.0 GiB of the worker's 23.5 GiB, 3.5 GiB are free"},
		{"cores taken", node, claimedOf(task.Task{Cpu: 1.5}), task.Task{Cpu: 1},
			"Task.Cpu: 1 cores do not fit now: tasks claim 1.5 of the worker's 2 cores, 0.5 are free"},

		// Claims that would overflow if they were summed as they come saturate instead.
		{"claims summing past max int64", node, claimedOf(task.Task{Memory: math.MaxInt64}, task.Task{Memory: math.MaxInt64}, task.Task{Memory: gib}),
			task.Task{Memory: gib}, "Task.Memory: 1.0 GiB does not fit now"},
		{"claims summing past max float64", node, claimedOf(task.Task{Cpu: math.MaxFloat64}, task.Task{Cpu: math.MaxFloat64}),
			task.Task{Cpu: 0.5}, "Task.Cpu: 0.5 cores do not fit now"},
		{"a NaN claim claims everything", node, claimedOf(task.Task{Cpu: math.NaN()}), task.Task{Cpu: 0.5}, "Task.Cpu: 0.5 cores do not fit now"},
		{"an infinite claim claims everything", node, claimedOf(task.Task{Cpu: math.Inf(1)}), task.Task{Cpu: 0.5}, "do not fit now"},
		{"a negative claim frees nothing", node, claimedOf(task.Task{Cpu: -5, Memory: -5 * gib}, task.Task{Cpu: 2, Memory: node.Memory}),
			task.Task{Cpu: 1, Memory: gib}, "Task.Cpu: 1 cores do not fit now"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := admit(tt.capacity, tt.claimed, tt.ask)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want it to fit", err)
				}
				return
			}
			if task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ECONFLICT containing %q", err, tt.want)
			}
		})
	}
}

// The report's sequence through Submit: with 1 GiB claimed, the largest int64 is refused
// outright, and nothing it did lets a 30 GB task in afterwards.
func TestSubmitRefusesOverflowingClaims(t *testing.T) {
	const gib = int64(1) << 30
	w := New(workertest.New(), Config{Capacity: Capacity{CPU: 2, Memory: 23*gib + gib/2}, Logger: testLogger(t)}) // not running
	first := newTask()
	first.Memory = gib
	submit(t, w, eventFor(first))
	huge := newTask()
	huge.Memory = math.MaxInt64
	if _, err := w.Submit(eventFor(huge)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "for tasks at all") {
		t.Fatalf("Memory max int64: got %v, want ECONFLICT: more than the worker has at all", err)
	}
	big := newTask()
	big.Memory = 30e9
	if _, err := w.Submit(eventFor(big)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "for tasks at all") {
		t.Fatalf("30 GB: got %v, want ECONFLICT: more than the worker has at all", err)
	}
	rest := newTask()
	rest.Memory = 22*gib + gib/2
	submit(t, w, eventFor(rest)) // exactly what is left
	one := newTask()
	one.Memory = task.MinMemory
	if _, err := w.Submit(eventFor(one)); task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "does not fit now") {
		t.Fatalf("a small task on a full worker: got %v, want ECONFLICT: does not fit now", err)
	}
	if n := len(w.List()); n != 2 {
		t.Errorf("tasks: got %d, want 2 (refused ones leave nothing behind)", n)
	}
}
