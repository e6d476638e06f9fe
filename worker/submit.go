package worker

import (
	"fmt"

	"github.com/cube-orchestrator/cube/internal/nodestats"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// What a client asks of the worker: each request is checked against the store and answered at
// once; what it asks for is stored as an order and queued for the task's runner.

// Submit accepts a task event. A new task ID creates the task, in state Scheduled, and queues its
// start; a known task ID with a new event ID queues a restart with the event's spec and
// RestartCount; an event ID already accepted changes nothing. It returns the task as it is stored
// now. It fails with EINVALID for a bad spec, EFORBIDDEN for host access the worker's policy does
// not allow, and ECONFLICT when the task's state forbids the
// event (the event's task must be Pending or Scheduled, and a Completed task cannot restart) or
// when the event ID was already accepted for another task.
func (w *Worker) Submit(ev task.Event) (task.Task, error) {
	if ev.ID == uuid.Nil {
		return task.Task{}, task.Errorf(task.EINVALID, "ID: the event needs a UUID")
	}
	if ev.Task.ID == uuid.Nil {
		return task.Task{}, task.Errorf(task.EINVALID, "Task.ID: the task needs a UUID")
	}
	if !ev.State.Valid() {
		return task.Task{}, task.Errorf(task.EINVALID, "State: %d is not a task state (0 to 4)", int(ev.State))
	}
	if !ev.Task.State.Valid() {
		return task.Task{}, task.Errorf(task.EINVALID, "Task.State: %d is not a task state (0 to 4)", int(ev.Task.State))
	}
	if err := ev.Task.Validate(); err != nil {
		return task.Task{}, err
	}
	if err := w.cfg.Policy.Check(ev.Task); err != nil {
		return task.Task{}, err
	}
	if ev.Task.State != task.Pending && ev.Task.State != task.Scheduled {
		return task.Task{}, task.Errorf(task.ECONFLICT,
			"Task.State: a task is submitted as Pending (0) or Scheduled (1), not %v (%d)", ev.Task.State, int(ev.Task.State))
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = w.now()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	cur, known := w.store.Get(ev.Task.ID)
	if known && w.isRemovingLocked(ev.Task.ID) {
		return task.Task{}, task.Errorf(task.ECONFLICT, "Task.ID: task %s is being removed; submit it again once it is gone", ev.Task.ID)
	}
	if taskID, ok := w.store.Seen(ev.ID); ok {
		if taskID != ev.Task.ID {
			return task.Task{}, task.Errorf(task.ECONFLICT,
				"ID: event %s was already accepted for task %s, not %s", ev.ID, taskID, ev.Task.ID)
		}
		return cur, nil
	}
	if known {
		if !task.ValidTransition(cur.State, task.Scheduled) {
			return task.Task{}, task.Errorf(task.ECONFLICT,
				"task %s is %v and cannot be restarted", cur.ID, cur.State)
		}
		if w.stoppingLocked(cur.ID) {
			return task.Task{}, task.Errorf(task.ECONFLICT, "task %s is being stopped and cannot be restarted", cur.ID)
		}
	}
	if err := w.nameFree(ev.Task); err != nil {
		return task.Task{}, err
	}
	if err := w.fits(ev.Task); err != nil {
		return task.Task{}, err
	}
	if err := w.roomInQueue(); err != nil {
		return task.Task{}, err
	}
	var created *task.Task
	if !known {
		if err := w.makeRoom(); err != nil {
			return task.Task{}, err
		}
		cur = specOf(ev.Task)
		cur.State = task.Scheduled // as the book's worker answers: its manager keeps the answer as its copy
		cur.AddRecord(w.now(), task.RecordReceived, "")
		created = &cur
	}
	order, err := w.store.Accept(created, task.Order{Kind: task.OrderStart, TaskID: ev.Task.ID, Event: &ev})
	if err != nil {
		return task.Task{}, fmt.Errorf("store the event for task %s: %w", ev.Task.ID, err)
	}
	w.intake.push(op{kind: opStart, taskID: ev.Task.ID, event: &ev, seq: order.Seq})
	if created != nil {
		w.names.update(task.Task{}, cur)
		w.publish(task.Task{ID: cur.ID}, cur)
	} else {
		// A restart holds its name from when it is accepted, not from when it is applied: no
		// other task may take the name meanwhile.
		next := cur
		next.Name, next.State = ev.Task.Name, task.Scheduled
		w.names.update(cur, next)
	}
	w.signal()
	w.log.Info("task event accepted", "task", ev.Task.ID, "event", ev.ID, "restart", known)
	return cur, nil
}

// Stop asks for the task to be stopped: its container stopped and removed, the task Completed
// (a task that already ended keeps its state). A task stopped this way never restarts. Stop
// returns once the stop is queued: ENOTFOUND for an unknown task, EUNAVAILABLE when the queue is
// full. Stopping a task that is already Completed does nothing.
func (w *Worker) Stop(id uuid.UUID) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, ok := w.store.Get(id)
	if !ok || w.isRemovingLocked(id) {
		return task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	if (cur.State == task.Completed && cur.ContainerID == "") || w.stoppingLocked(id) {
		return nil
	}
	if err := w.roomInQueue(); err != nil {
		return err
	}
	order, err := w.store.Accept(nil, task.Order{Kind: task.OrderStop, TaskID: id})
	if err != nil {
		return fmt.Errorf("store the stop of task %s: %w", id, err)
	}
	w.runnerLocked(id).stopping = true
	w.intake.push(op{kind: opStop, taskID: id, seq: order.Seq})
	w.signal()
	w.log.Info("task stop accepted", "task", id)
	return nil
}

// nameFree returns ECONFLICT, naming the holder, when another task that has not ended (it is
// neither Completed nor Failed) has t's name: a name picks one task out for people and the CLI.
// An ended task's name may be taken again. Callers hold w.mu.
func (w *Worker) nameFree(t task.Task) error {
	if t.Name == "" {
		return nil
	}
	// A task being removed is already gone for clients (404): its name is free to take.
	if id, ok := w.names.holder(t.Name); ok && id != t.ID && !w.isRemovingLocked(id) {
		return task.Errorf(task.ECONFLICT, "Task.Name: %q is the name of task %s, which has not ended; stop it or choose another name", t.Name, id)
	}
	return nil
}

// roomInQueue returns EUNAVAILABLE when maxQueue operations wait (see QueueLen). Callers hold
// w.mu.
func (w *Worker) roomInQueue() error {
	n := w.waitingLocked()
	if n >= w.cfg.MaxQueue {
		return task.Errorf(task.EUNAVAILABLE, "the worker's queue is full (%d operations waiting); try again later", n)
	}
	return nil
}

// Get returns the task with the given ID, or an ENOTFOUND error.
func (w *Worker) Get(id uuid.UUID) (task.Task, error) {
	gone := w.isRemoving(id) // before the store: a removal that ends in between leaves no task
	t, ok := w.store.Get(id)
	if !ok || gone {
		return task.Task{}, task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	shown(&t, w.unconfirmed())
	return t, nil
}

// List returns every task, in the order they were submitted. While the runtime does not answer,
// tasks that have not ended carry a note that their state is unconfirmed.
//
// The tasks are shallow copies (see Each): each Task's fields are the caller's to set, but its
// maps, slices and pointers are the stored task's, which never change and must not be written.
func (w *Worker) List() []task.Task {
	list := make([]task.Task, 0, w.store.Len()) // never nil: an empty list encodes as [], not null
	w.Each(func(t *task.Task) error { list = append(list, *t); return nil })
	return list
}

// Each calls f with every task, in List's order and as List returns it, one at a time, and
// returns f's first error, which stops it. t is a copy of the task's own fields, valid only
// during the call; its maps, slices and pointers are the stored task's and must not be written.
// Unlike List it copies no Task up front, only a pointer to each: GET /tasks encodes each task
// as it comes, and allocates nothing per task but the pointer.
func (w *Worker) Each(f func(t *task.Task) error) error {
	gone := w.removingNow() // before the store: a removal that ends in between leaves no task
	refs := w.store.Refs(nil)
	note := w.unconfirmed()
	var t task.Task
	for _, p := range refs {
		if gone[p.ID] {
			continue
		}
		t = *p
		shown(&t, note)
		if err := f(&t); err != nil {
			return err
		}
	}
	return nil
}

// shown makes t what Get, List and Each show of it: its live fields cleared unless it runs (for
// a task stored by a path or a version that did not apply the rule), and note, when the runtime
// does not answer, on a task that has not ended.
func shown(t *task.Task, note string) {
	t.ClearLiveFields()
	if note != "" && !t.State.Terminal() {
		t.Unconfirmed = note
	}
}

// Stats returns the node's stats with the number of Running tasks.
func (w *Worker) Stats() (nodestats.Stats, error) {
	s, err := w.cfg.Stats.Read()
	if err != nil {
		return nodestats.Stats{}, fmt.Errorf("read node stats: %w", err)
	}
	s.TaskCount = w.store.Count(task.Running) // O(1): the store keeps the counts by state
	return s, nil
}

// QueueLen returns the number of operations that wait, wherever they wait: accepted and not yet
// handed to a lane, waiting in a task's lane behind the one under way, parked until the runtime
// answers, and starts waiting for a start slot. A task waiting out a restart back-off is not
// counted (it is Scheduled, with no operation yet).
func (w *Worker) QueueLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waitingLocked()
}

// waitingLocked counts what QueueLen counts. Callers hold w.mu.
func (w *Worker) waitingLocked() int {
	return w.intake.len() + w.queued // a start waiting for a slot is back in its runner's backlog
}

// stoppingLocked reports whether a stop or removal of task id is accepted and not yet applied.
// Callers hold w.mu.
func (w *Worker) stoppingLocked(id uuid.UUID) bool {
	r := w.runners[id]
	return r != nil && r.stopping
}
