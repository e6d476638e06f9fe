// Package task holds cube's domain: the task, its states and the rules for moving between them,
// the events that drive it, what a runtime observes about a task's container, and the kinds of
// error every layer speaks. It imports no technology: no Docker, no HTTP, no storage.
//
// A task moves through five states. The transition table is the only authority on which moves are
// allowed; the worker asks [ValidTransition] before every change and never sets a state otherwise.
//
//	                ┌──────────┐
//	                ▼          │ (retry)
//	Pending ──▶ Scheduled ──▶ Running ──▶ Completed   (terminal)
//	                │  ▲         │
//	                │  └─────────┤ (restart)
//	                ▼            ▼
//	              Failed ◀───────┘
//	                │
//	                └──▶ Scheduled (restart)
//
//	Pending, Scheduled ──▶ Completed   (stopped before it ran, or while it waited to restart)
//
// A task the worker accepts starts in Scheduled; Pending is a state a manager may hold a task in
// before it sends it. Completed and Failed are the ends of a run ([State.Ended]): a stop ends a
// task that has not ended Completed, and leaves one that has ended as it is. Only Completed is
// terminal; a Failed task may be restarted.
//
// States are serialized as integers (0 Pending … 4 Failed), as the book's Cube manager expects.
package task

import "fmt"

// State is where a task is in its life.
type State int

// The states of a task. Their numeric values are part of the wire format.
const (
	Pending State = iota
	Scheduled
	Running
	Completed
	Failed
)

var stateNames = [...]string{"Pending", "Scheduled", "Running", "Completed", "Failed"}

// String returns the state's name, or "State(N)" for a value outside the known states.
func (s State) String() string {
	if s.Valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Valid reports whether s is one of the five known states.
func (s State) Valid() bool { return s >= Pending && s <= Failed }

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool { return len(transitions[s]) == 0 }

// Ended reports whether a task in state s has ended its run, Completed or Failed: it claims no
// resources, a stop leaves its state as it is, and only a restart event can start it again.
func (s State) Ended() bool { return s == Completed || s == Failed }

// transitions is the whole state machine: the states each state may move to.
var transitions = map[State][]State{
	Pending:   {Scheduled, Completed},
	Scheduled: {Scheduled, Running, Completed, Failed},
	Running:   {Running, Completed, Failed, Scheduled},
	Completed: {},
	Failed:    {Scheduled},
}

// ValidTransition reports whether a task in state src may move to state dst.
// It is false for any state outside the known five.
func ValidTransition(src, dst State) bool {
	for _, s := range transitions[src] {
		if s == dst {
			return true
		}
	}
	return false
}
