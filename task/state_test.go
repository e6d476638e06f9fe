package task

import (
	"encoding/json"
	"testing"
)

func TestValidTransition(t *testing.T) {
	// Every pair of states, spelled out, so that a change to the table shows up here.
	allowed := map[[2]State]bool{
		{Pending, Scheduled}:   true,
		{Pending, Completed}:   true, // stopped before it was scheduled
		{Scheduled, Scheduled}: true,
		{Scheduled, Running}:   true,
		{Scheduled, Completed}: true, // stopped before it ran, or while it waited to restart
		{Scheduled, Failed}:    true,
		{Running, Running}:     true,
		{Running, Completed}:   true,
		{Running, Failed}:      true,
		{Running, Scheduled}:   true,
		{Failed, Scheduled}:    true,
	}
	all := []State{Pending, Scheduled, Running, Completed, Failed}
	n := 0
	for _, src := range all {
		for _, dst := range all {
			want := allowed[[2]State{src, dst}]
			if want {
				n++
			}
			if got := ValidTransition(src, dst); got != want {
				t.Errorf("ValidTransition(%v, %v) = %v, want %v", src, dst, got, want)
			}
		}
	}
	if n != len(allowed) {
		t.Fatalf("table test covers %d allowed transitions, want %d", n, len(allowed))
	}
	for _, bad := range []State{-1, 5, 42} {
		for _, s := range all {
			if ValidTransition(bad, s) || ValidTransition(s, bad) {
				t.Errorf("transition between %v and unknown state %v allowed", s, bad)
			}
		}
	}
}

func TestStateTerminal(t *testing.T) {
	for _, s := range []State{Pending, Scheduled, Running, Failed} {
		if s.Terminal() {
			t.Errorf("%v.Terminal() = true, want false", s)
		}
	}
	if !Completed.Terminal() {
		t.Error("Completed.Terminal() = false, want true")
	}
}

func TestStateEnded(t *testing.T) {
	tests := []struct {
		s    State
		want bool
	}{
		{Pending, false}, {Scheduled, false}, {Running, false}, {Completed, true}, {Failed, true}, {7, false}, {-1, false},
	}
	for _, tt := range tests {
		if got := tt.s.Ended(); got != tt.want {
			t.Errorf("%v.Ended() = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// A stop ends every task that has not ended Completed: the table allows that move from each
// such state, so the worker's stop never needs a way around it.
func TestStopEndsCompleted(t *testing.T) {
	for _, s := range []State{Pending, Scheduled, Running} {
		if !ValidTransition(s, Completed) {
			t.Errorf("ValidTransition(%v, Completed) = false: a stop could not end the task", s)
		}
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{Pending, "Pending"}, {Scheduled, "Scheduled"}, {Running, "Running"},
		{Completed, "Completed"}, {Failed, "Failed"}, {7, "State(7)"}, {-1, "State(-1)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

func TestStateJSONIsInteger(t *testing.T) {
	b, err := json.Marshal(struct{ State State }{Failed})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"State":4}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
