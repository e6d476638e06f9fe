package worker

import (
	"fmt"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
)

// fits returns ECONFLICT when t's Cpu or Memory does not fit in what the tasks that have not
// ended, other than t itself, leave of the worker's capacity. It costs O(1): the store keeps the
// claims summed. Callers hold w.mu.
func (w *Worker) fits(t task.Task) error {
	if (w.capacity.CPU <= 0 || t.Cpu == 0) && (w.capacity.Memory <= 0 || t.Memory == 0) {
		return nil
	}
	return admit(w.capacity, w.store.Claimed(t.ID), t)
}

// cpuSlack forgives the rounding of float sums of cores, so that 0.1+0.2 cores fit in 0.3.
const cpuSlack = 1e-9

// admit returns nil when t's Cpu and Memory fit in capacity next to what claimed already takes,
// and otherwise an ECONFLICT *task.Error naming the field: one that says the task asks for more
// than the worker has for tasks at all (it can never run here), or one that says how much is
// claimed and free now. A zero capacity field is unlimited; a zero claim claims nothing.
func admit(capacity Capacity, claimed taskindex.Claims, t task.Task) error {
	limitCPU := capacity.CPU > 0 && t.Cpu != 0
	limitMem := capacity.Memory > 0 && t.Memory != 0
	if limitCPU && !(t.Cpu <= capacity.CPU+cpuSlack) { // NaN is more than any capacity
		return task.Errorf(task.ECONFLICT, "Task.Cpu: %g cores is more than this worker has for tasks at all (%g cores); it can never run here",
			t.Cpu, capacity.CPU)
	}
	if limitMem && !(t.Memory > 0 && t.Memory <= capacity.Memory) {
		return task.Errorf(task.ECONFLICT, "Task.Memory: %s is more than this worker has for tasks at all (%s); it can never run here",
			bytesString(t.Memory), bytesString(capacity.Memory))
	}
	// Subtracting from the capacity rather than adding to the claims cannot overflow: the
	// capacity is positive and the claims are not negative.
	if free := capacity.CPU - claimed.CPU; limitCPU && t.Cpu > free+cpuSlack {
		return task.Errorf(task.ECONFLICT, "Task.Cpu: %g cores do not fit now: tasks claim %g of the worker's %g cores, %g are free",
			t.Cpu, claimed.CPU, capacity.CPU, max(0, free))
	}
	if free := capacity.Memory - claimed.Memory; limitMem && t.Memory > free {
		return task.Errorf(task.ECONFLICT, "Task.Memory: %s does not fit now: tasks claim %s of the worker's %s, %s are free",
			bytesString(t.Memory), bytesString(claimed.Memory), bytesString(capacity.Memory), bytesString(max(0, free)))
	}
	return nil
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}
