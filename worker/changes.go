package worker

import (
	"fmt"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// changeBacklog is how many changes the worker keeps for subscribers that reconnect.
const changeBacklog = 4096

// subscriberBuffer is how far a subscriber may fall behind before it is cut off; it then
// reconnects and catches up from the backlog.
const subscriberBuffer = 512

// hub keeps the latest changes of every task and hands new ones to subscribers.
//
// Change numbers never go back, not even across a restart of the worker: a run numbers its
// changes on from the microseconds since 1970 at its start (seqBase), so the first change of a
// run comes after every change of the runs before it (a run would have to make more than a
// million changes a second to catch up with the clock). Changes are not kept across a restart;
// a subscriber that resumes after a change that is no longer kept gets a Reset instead.
type hub struct {
	mu   sync.Mutex
	seq  uint64 // the newest change's Seq, or the run's base before the first
	base uint64 // the run's base: its first change is base+1
	// ring holds the latest changes, at most changeBacklog: oldest first until it is full,
	// then a circle whose oldest is at head, each change written over the oldest. It never
	// holds more than it keeps: a slice trimmed in batches held up to twice the backlog (1 MB
	// of changes at 1,000 Running tasks) and copied half of it at every trim.
	ring []task.Change
	head int
	subs map[chan task.Change]struct{}
}

// seqBase returns the Seq a run of the worker starting at now numbers its changes after.
func seqBase(now time.Time) uint64 { return uint64(max(now.UnixMicro(), 0)) }

// publish gives each change its Seq, keeps it, and sends it to every subscriber. A subscriber
// whose buffer is full is cut off (its channel closed) rather than holding up the worker.
func (h *hub) publish(changes []task.Change) {
	if len(changes) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range changes {
		h.seq++
		c.Seq = h.seq
		if len(h.ring) < changeBacklog {
			if len(h.ring) == cap(h.ring) { // grown as append would, but never past the backlog
				grown := make([]task.Change, len(h.ring), min(max(2*cap(h.ring), 64), changeBacklog))
				copy(grown, h.ring)
				h.ring = grown
			}
			h.ring = append(h.ring, c)
		} else {
			h.ring[h.head] = c
			h.head = (h.head + 1) % len(h.ring)
		}
		for ch := range h.subs {
			select {
			case ch <- c:
			default:
				delete(h.subs, ch)
				close(ch)
			}
		}
	}
}

// Changes subscribes to the worker's task changes. It returns the kept changes with a Seq above
// after (all kept changes when after is 0), a channel of the changes that follow, and a function
// that ends the subscription. The channel is closed when the subscriber falls too far behind; it
// should then subscribe again with the last Seq it saw.
//
// When the changes after after are not all kept (after is from an earlier run of the worker, or
// so old that its successors were dropped, or from the future) the backlog is a single change of
// Type task.ChangeReset with the newest Seq: the subscriber cannot learn what it missed from the
// stream and must read the tasks again. Nothing is ever skipped in silence.
func (w *Worker) Changes(after uint64) ([]task.Change, <-chan task.Change, func()) {
	h := &w.changes
	h.mu.Lock()
	defer h.mu.Unlock()
	var backlog []task.Change
	older, newer := h.ring[h.head:], h.ring[:h.head] // the kept changes, oldest first
	oldest := h.seq + 1                              // the Seq of the oldest change kept
	if len(h.ring) > 0 {
		oldest = older[0].Seq
	}
	switch {
	case after == 0 || (after+1 >= oldest && after <= h.seq):
		for _, kept := range [][]task.Change{older, newer} {
			for _, c := range kept {
				if c.Seq > after {
					backlog = append(backlog, c)
				}
			}
		}
	default:
		why := "the changes after it are no longer kept"
		if after > h.seq || after < h.base {
			why = "it is from another run of the worker, which has restarted since"
		}
		backlog = []task.Change{{Seq: h.seq, Time: w.now(), Type: task.ChangeReset,
			Message: fmt.Sprintf("cannot resume after change %d: %s; read the tasks again", after, why)}}
	}
	ch := make(chan task.Change, subscriberBuffer)
	if h.subs == nil {
		h.subs = make(map[chan task.Change]struct{})
	}
	h.subs[ch] = struct{}{}
	var once sync.Once
	return backlog, ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if _, ok := h.subs[ch]; ok {
				delete(h.subs, ch)
				close(ch)
			}
		})
	}
}

// LastChange returns the Seq of the newest change.
func (w *Worker) LastChange() uint64 {
	w.changes.mu.Lock()
	defer w.changes.mu.Unlock()
	return w.changes.seq
}

// diff returns the changes between two versions of a task: one per record added, and one for a
// change of state that no record accounts for.
func diff(before, after task.Task) []task.Change {
	added := after.Events
	if n := len(before.Events); n > 0 {
		last := before.Events[n-1]
		added = nil
		for i := len(after.Events) - 1; i >= 0; i-- {
			if after.Events[i] == last {
				added = after.Events[i+1:]
				break
			}
		}
	}
	mk := func(typ, msg string, at task.Record) task.Change {
		return task.Change{Time: at.Time, TaskID: after.ID, Name: after.Name, Type: typ, Message: msg,
			State: after.State, HealthStatus: after.HealthStatus, RestartCount: after.RestartCount}
	}
	var out []task.Change
	for _, r := range added {
		out = append(out, mk(r.Type, r.Message, r))
	}
	if len(out) == 0 && (before.State != after.State || before.HealthStatus != after.HealthStatus) {
		out = append(out, mk("State", after.Error, task.Record{Time: after.FinishTime}))
		if out[0].Time.IsZero() {
			out[0].Time = after.StartTime
		}
	}
	return out
}
