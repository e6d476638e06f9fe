package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The kernel's limit on threads is what stops an Engine from holding more containers on a
// machine like this one: every container brings its process, a containerd shim and, on
// fuse-overlayfs, a FUSE daemon, each with threads of its own (about 33 in all, measured). When
// the kernel runs out of PIDs the Engine's forks fail half-way (a create that times out, a shim
// that cannot start) and it is left with containers it cannot remove. The scale phase reads the
// limit before it starts and, after each wave, what a container has cost so far, and stops
// before a wave would bring the machine within pidHeadroom of the limit.

// pidHeadroom is the share of the thread limit the scale phase leaves free for everyone else.
const pidHeadroom = 0.05

// threadBudget is the machine's thread limit as the scale phase sees it: the lower of
// kernel.pid_max and kernel.threads-max, and the threads in use when it was read.
type threadBudget struct {
	Limit int `json:"limit"`
	Base  int `json:"threads_at_start"`
}

// readThreadBudget reads the limit and the threads in use now.
func readThreadBudget() (threadBudget, error) {
	pidMax, err := readProcInt("/proc/sys/kernel/pid_max")
	if err != nil {
		return threadBudget{}, err
	}
	threadsMax, err := readProcInt("/proc/sys/kernel/threads-max")
	if err != nil {
		return threadBudget{}, err
	}
	n, err := threadsInUse()
	if err != nil {
		return threadBudget{}, err
	}
	return threadBudget{Limit: min(pidMax, threadsMax), Base: n}, nil
}

// check reports an error when adding more containers, at the threads the containers made so far
// (made) have cost on average, would leave less than pidHeadroom of the limit free.
func (tb threadBudget) check(made, more int) error {
	if made == 0 || more == 0 {
		return nil
	}
	now, err := threadsInUse()
	if err != nil {
		return err
	}
	per := float64(max(now-tb.Base, 0)) / float64(made)
	need := float64(now) + per*float64(more)
	allowed := float64(tb.Limit) * (1 - pidHeadroom)
	if need <= allowed {
		return nil
	}
	fit := made + int((allowed-float64(now))/max(per, 1))
	return fmt.Errorf("the machine cannot hold %d more containers: %d threads in use, %.1f per container so far, "+
		"limit %d (kernel.pid_max, kernel.threads-max); about %d containers fit in all. "+
		"Raise the limit (sysctl -w kernel.pid_max=4194304) or lower -scale-running", more, now, per, tb.Limit, max(fit, made))
}

// threadsInUse is the number of threads on the machine: the fourth field of /proc/loadavg
// ("runnable/total").
func threadsInUse() (int, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, fmt.Errorf("/proc/loadavg: unexpected %q", b)
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, fmt.Errorf("/proc/loadavg: unexpected %q", b)
	}
	return strconv.Atoi(total)
}

func readProcInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
