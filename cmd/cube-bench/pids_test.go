package main

import (
	"os"
	"strings"
	"testing"
)

func TestThreadBudget(t *testing.T) {
	tb, err := readThreadBudget()
	if err != nil {
		t.Fatal(err)
	}
	if tb.Limit <= 0 || tb.Base <= 0 || tb.Base > tb.Limit {
		t.Fatalf("budget %+v: want a positive limit above the threads in use", tb)
	}
	// As if 10 containers had cost 1,000 threads: 100 each.
	tb = threadBudget{Limit: tb.Base + 1000 + 2000, Base: tb.Base - 1000}
	if err := tb.check(10, 5); err != nil {
		t.Errorf("5 more at 100 threads each, with 2,000 threads free: %v", err)
	}
	err = tb.check(10, 100)
	if err == nil {
		t.Fatal("100 more at 100 threads each, with 2,000 threads free: no error")
	}
	for _, want := range []string{"cannot hold 100 more containers", "kernel.pid_max", "-scale-running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := tb.check(0, 100); err != nil {
		t.Errorf("nothing made yet, so nothing known per container: %v", err)
	}
}

func TestProcStatusSplitsTheResidentSet(t *testing.T) {
	m, err := procStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Anon <= 0 || m.File <= 0 || m.HWM < m.RSS {
		t.Fatalf("memory %+v: want RSS, anonymous and file parts above 0 and a peak at least the RSS", m)
	}
	// VmRSS is RssAnon + RssFile + RssShmem, each read at a slightly different moment.
	if d := m.RSS - m.Anon - m.File; d < -(1<<20) || d > 1<<20 {
		t.Errorf("memory %+v: RSS is not its parts' sum (off by %d bytes)", m, d)
	}
}
