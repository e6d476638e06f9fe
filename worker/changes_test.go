package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/workertest"
)

func TestChangesTellATasksLifeAndResume(t *testing.T) {
	rt := workertest.New()
	// A reconcile finds the exit should the die event come before the worker subscribed.
	w := startWorker(t, rt, Config{ReconcileInterval: 50 * time.Millisecond})
	base := w.LastChange()
	if now := uint64(time.Now().UnixMicro()); base == 0 || base > now {
		t.Fatalf("LastChange of a new worker: got %d, want the microseconds since 1970 at its start (now %d)", base, now)
	}
	backlog, ch, cancel := w.Changes(0)
	defer cancel()
	if len(backlog) != 0 {
		t.Fatalf("backlog of a new worker: %v", backlog)
	}
	spec := newTask()
	run := runTask(t, w, spec)
	rt.Exit(run.ContainerID, 3, false)
	waitState(t, w, spec.ID, task.Failed)

	var got []task.Change
	deadline := time.After(waitTimeout)
	for len(got) < 5 {
		select {
		case c := <-ch:
			got = append(got, c)
		case <-deadline:
			t.Fatalf("changes: got %v, want 5", got)
		}
	}
	var types []string
	for i, c := range got {
		types = append(types, c.Type)
		if c.Seq != base+uint64(i+1) || c.TaskID != spec.ID || c.Time.IsZero() {
			t.Errorf("change %d: %+v, want Seq %d of task %s with a time", i, c, base+uint64(i+1), spec.ID)
		}
	}
	if want := "Received,Created,Started,Exited,Failed"; strings.Join(types, ",") != want {
		t.Errorf("types: got %v, want %s", types, want)
	}
	// Accepted is Scheduled: the Received record comes with it, and no change of state follows
	// until Started.
	if got[0].State != task.Scheduled || got[1].State != task.Scheduled || got[2].State != task.Running {
		t.Errorf("states: %+v, %+v and %+v, want Scheduled (Received), Scheduled (Created), then Running (Started)", got[0], got[1], got[2])
	}
	if last := got[4]; last.State != task.Failed || last.Message != "exited with code 3" {
		t.Errorf("last change: %+v, want Failed with the reason", last)
	}
	// A subscriber that reconnects after the second change gets what it missed, nothing more.
	backlog, _, cancel2 := w.Changes(base + 2)
	defer cancel2()
	if len(backlog) != 3 || backlog[0].Seq != base+3 || backlog[2].Seq != base+5 {
		t.Errorf("backlog after %d: %+v, want Seq %d to %d", base+2, backlog, base+3, base+5)
	}
	// The subscriber that saw everything, or opened at the start, resumes with nothing missed.
	for _, after := range []uint64{base, base + 5} {
		if backlog, _, cancel := w.Changes(after); after == base && len(backlog) != 5 || after == base+5 && len(backlog) != 0 {
			t.Errorf("backlog after %d: %+v, want the changes after it", after, backlog)
			cancel()
		} else {
			cancel()
		}
	}
	if w.LastChange() != base+5 {
		t.Errorf("LastChange: %d, want %d", w.LastChange(), base+5)
	}
}

func TestChangesResetWhenTheyCannotResume(t *testing.T) {
	rt := workertest.New()
	w := startWorker(t, rt, Config{})
	base := w.LastChange()
	spec := newTask()
	runTask(t, w, spec)
	newest := w.LastChange()
	for _, tt := range []struct {
		name  string
		after uint64
		why   string
	}{
		{"from an earlier run", base - 1, "another run of the worker"},
		{"long before this run", 42, "another run of the worker"},
		{"from the future", newest + 1, "another run of the worker"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			backlog, _, cancel := w.Changes(tt.after)
			defer cancel()
			if len(backlog) != 1 || backlog[0].Type != task.ChangeReset || backlog[0].Seq != newest ||
				!strings.Contains(backlog[0].Message, tt.why) || !strings.Contains(backlog[0].Message, "read the tasks again") {
				t.Errorf("backlog after %d: got %+v, want one %s change at Seq %d saying %q", tt.after, backlog, task.ChangeReset, newest, tt.why)
			}
		})
	}
}

func TestChangesResetWhenTrimmed(t *testing.T) {
	w := &Worker{cfg: Config{Now: time.Now}}
	w.changes.base, w.changes.seq = 1000, 1000
	w.changes.publish(make([]task.Change, 3*changeBacklog))
	newest := uint64(1000 + 3*changeBacklog)
	oldest := newest - changeBacklog + 1
	if backlog, _, cancel := w.Changes(oldest - 1); len(backlog) != changeBacklog || backlog[0].Seq != oldest {
		t.Errorf("after %d, just before the oldest kept: got %d changes, want %d from %d", oldest-1, len(backlog), changeBacklog, oldest)
		cancel()
	} else {
		cancel()
	}
	backlog, _, cancel := w.Changes(oldest - 2)
	defer cancel()
	if len(backlog) != 1 || backlog[0].Type != task.ChangeReset || backlog[0].Seq != newest || !strings.Contains(backlog[0].Message, "no longer kept") {
		t.Errorf("after %d, whose successor was dropped: got %d changes (%+v), want one Reset at %d", oldest-2, len(backlog), backlog[:min(1, len(backlog))], newest)
	}
}

func TestSlowSubscriberIsCutOff(t *testing.T) {
	var hh hub
	sub := make(chan task.Change, 1)
	hh.subs = map[chan task.Change]struct{}{sub: {}}
	hh.publish([]task.Change{{Type: "A"}, {Type: "B"}})
	if _, open := <-sub; !open {
		t.Fatal("the first change was not delivered")
	}
	if _, open := <-sub; open {
		t.Fatal("a subscriber that fell behind was not cut off")
	}
	if hh.seq != 2 || len(hh.ring) != 2 {
		t.Errorf("hub: seq %d ring %d, want both 2", hh.seq, len(hh.ring))
	}
}

// The backlog is the last changeBacklog changes in order wherever the circle's oldest stands, and
// the worker never holds more changes than it keeps.
func TestChangesBacklogWrapsInOrder(t *testing.T) {
	w := &Worker{cfg: Config{Now: time.Now}}
	w.changes.base, w.changes.seq = 1000, 1000
	for _, n := range []int{changeBacklog - 3, 40, 1, changeBacklog + 5, 17} {
		w.changes.publish(make([]task.Change, n))
		if c := cap(w.changes.ring); c > changeBacklog {
			t.Fatalf("after %d more changes: the ring holds room for %d, want at most %d", n, c, changeBacklog)
		}
		newest := w.changes.seq
		backlog, _, cancel := w.Changes(0)
		cancel()
		want := min(int(newest-1000), changeBacklog)
		if len(backlog) != want {
			t.Fatalf("after %d more changes: got %d kept, want %d", n, len(backlog), want)
		}
		for i, c := range backlog {
			if c.Seq != newest-uint64(want-1-i) {
				t.Fatalf("after %d more changes: backlog[%d].Seq = %d, want %d", n, i, c.Seq, newest-uint64(want-1-i))
			}
		}
		mid := newest - 10
		if after, _, cancel := w.Changes(mid); len(after) != 10 || after[0].Seq != mid+1 {
			t.Errorf("after %d more changes, resuming after %d: got %d changes, want 10 from %d", n, mid, len(after), mid+1)
			cancel()
		} else {
			cancel()
		}
	}
}
