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
	w := startWorker(t, rt, Config{})
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
		if c.Seq != uint64(i+1) || c.TaskID != spec.ID || c.Time.IsZero() {
			t.Errorf("change %d: %+v, want Seq %d of task %s with a time", i, c, i+1, spec.ID)
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
	// A subscriber that reconnects after Seq 2 gets what it missed, nothing more.
	backlog, _, cancel2 := w.Changes(2)
	defer cancel2()
	if len(backlog) != 3 || backlog[0].Seq != 3 || backlog[2].Seq != 5 {
		t.Errorf("backlog after 2: %+v, want Seq 3 to 5", backlog)
	}
	// After a worker restart the client's Seq is ahead: it gets everything kept.
	if backlog, _, cancel3 := w.Changes(99); len(backlog) != 5 {
		t.Errorf("backlog after an unknown Seq: %d changes, want all 5", len(backlog))
		cancel3()
	} else {
		cancel3()
	}
	if w.LastChange() != 5 {
		t.Errorf("LastChange: %d, want 5", w.LastChange())
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
