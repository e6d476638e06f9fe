// Package worker runs tasks on one machine. It owns the queue of accepted task events, the loop
// that applies them through the task state machine and a [Runtime], the store of every task, and
// the watch over the runtime's container events that tells the worker, at once, when a container
// exits or disappears.
//
// Work flows one way. [Worker.Submit] and [Worker.Stop] check a request against the store,
// answer at once, and queue an operation. The loop hands each operation to the lane of its task:
// operations on one task apply one after another, in the order they were accepted, while the lanes
// of different tasks run concurrently (container starts are bounded by Config.Concurrency).
// Container events from the runtime, and a periodic reconcile that compares the runtime's list of
// containers with the store, enter the same lanes, so every change to a task is made by exactly
// one goroutine at a time and always through [task.ValidTransition].
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/internal/nodestats"
	"github.com/cube-orchestrator/cube/task"
	"github.com/golang-collections/collections/queue"
	"github.com/google/uuid"
)

// Runtime runs containers for tasks. The Docker adapter implements it; tests may use a fake.
// Errors are *task.Error values where the kind matters: ENOTFOUND for a container or image that
// does not exist, EUNAVAILABLE when the runtime does not answer.
type Runtime interface {
	// Start makes sure the task's image is present, then creates and starts a container for the
	// task, labelled with task.LabelTaskID. It returns the running container. On failure it
	// leaves no container behind.
	Start(ctx context.Context, t task.Task) (task.Container, error)
	// Stop stops the container (with the runtime's grace period) and removes it. A container that
	// is already stopped or gone is success.
	Stop(ctx context.Context, containerID string) error
	// Inspect returns the container's current state, or an ENOTFOUND error when it is gone.
	Inspect(ctx context.Context, containerID string) (task.Container, error)
	// List returns every container labelled with task.LabelTaskID, running or not.
	List(ctx context.Context) ([]task.Container, error)
	// Watch calls fn for each event about a labelled container, from since onwards, until ctx is
	// done (it then returns ctx.Err()) or the stream breaks (it returns why).
	Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error
	// Ping returns nil when the runtime answers.
	Ping(ctx context.Context) error
}

// Config configures a Worker. Zero fields take the defaults noted.
type Config struct {
	Name              string           // the worker's name, for logs
	Concurrency       int              // container starts under way at once; default 4
	Store             Store            // default: a new MemoryStore
	Logger            *slog.Logger     // default: slog.Default()
	Now               func() time.Time // the clock; default time.Now
	ReconcileInterval time.Duration    // how often to compare the runtime with the store; default 10s
	StartTimeout      time.Duration    // bound on one start, image pull included; default 10m
	StopTimeout       time.Duration    // bound on one stop and remove; default 2m
	Stats             nodestats.Reader // where node stats come from; default /proc and /
}

// Worker accepts task events and runs them through a Runtime. Create it with New, then call Run.
type Worker struct {
	name  string
	rt    Runtime
	store Store
	log   *slog.Logger
	now   func() time.Time
	stats nodestats.Reader

	reconcileEvery time.Duration
	startTimeout   time.Duration
	stopTimeout    time.Duration
	startSlots     chan struct{} // a semaphore bounding concurrent starts

	mu      sync.Mutex // guards everything below
	pending *queue.Queue
	notify  chan struct{}           // has a value when pending may be non-empty
	seen    map[uuid.UUID]uuid.UUID // accepted event IDs, to the task each was for
	lanes   map[uuid.UUID]*lane
	running bool // Run has started and not yet returned
	wg      sync.WaitGroup
}

// lane is the list of operations waiting for one task. A lane exists while it has work; its
// goroutine applies the operations in order and removes the lane when it runs dry.
type lane struct {
	ops []op
}

type opKind int

const (
	opStart opKind = iota // start or restart the task from event
	opStop                // stop the task: the API's DELETE
	opCheck               // find out what became of containerID and record it
)

// op is one unit of work on one task.
type op struct {
	kind        opKind
	taskID      uuid.UUID
	event       task.Event // opStart
	containerID string     // opCheck
	reason      string     // opCheck: what prompted it, for logs
}

// New returns a Worker that runs tasks through rt.
func New(rt Runtime, cfg Config) *Worker {
	w := &Worker{
		name:           cfg.Name,
		rt:             rt,
		store:          cfg.Store,
		log:            cfg.Logger,
		now:            cfg.Now,
		stats:          cfg.Stats,
		reconcileEvery: cfg.ReconcileInterval,
		startTimeout:   cfg.StartTimeout,
		stopTimeout:    cfg.StopTimeout,
		pending:        queue.New(),
		notify:         make(chan struct{}, 1),
		seen:           make(map[uuid.UUID]uuid.UUID),
		lanes:          make(map[uuid.UUID]*lane),
	}
	if w.store == nil {
		w.store = &MemoryStore{}
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.stats == (nodestats.Reader{}) {
		w.stats = nodestats.Reader{ProcRoot: "/proc", DiskPath: "/"}
	}
	if w.reconcileEvery <= 0 {
		w.reconcileEvery = 10 * time.Second
	}
	if w.startTimeout <= 0 {
		w.startTimeout = 10 * time.Minute
	}
	if w.stopTimeout <= 0 {
		w.stopTimeout = 2 * time.Minute
	}
	n := cfg.Concurrency
	if n <= 0 {
		n = 4
	}
	w.startSlots = make(chan struct{}, n)
	return w
}

// Name returns the worker's name.
func (w *Worker) Name() string { return w.name }

// Submit accepts a task event. A new task ID creates the task, in state Pending, and queues its
// start; a known task ID with a new event ID queues a restart with the event's spec and
// RestartCount; an event ID already accepted changes nothing. It returns the task as it is stored
// now. It fails with EINVALID for a bad spec and ECONFLICT when the task's state forbids the
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
	if taskID, ok := w.seen[ev.ID]; ok {
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
	} else {
		cur = specOf(ev.Task)
		cur.State = task.Pending
		if err := w.store.Put(cur); err != nil {
			return task.Task{}, fmt.Errorf("store task %s: %w", cur.ID, err)
		}
	}
	w.seen[ev.ID] = ev.Task.ID
	w.pending.Enqueue(op{kind: opStart, taskID: ev.Task.ID, event: ev})
	w.signal()
	w.log.Info("task event accepted", "task", ev.Task.ID, "event", ev.ID, "restart", known)
	return cur, nil
}

// Stop asks for the task to be stopped: its container stopped and removed, the task Completed.
// It returns once the stop is queued, ENOTFOUND for an unknown task. Stopping a task that is
// already Completed does nothing.
func (w *Worker) Stop(id uuid.UUID) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, ok := w.store.Get(id)
	if !ok {
		return task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	if cur.State == task.Completed {
		return nil
	}
	w.pending.Enqueue(op{kind: opStop, taskID: id})
	w.signal()
	w.log.Info("task stop accepted", "task", id)
	return nil
}

// Get returns the task with the given ID, or an ENOTFOUND error.
func (w *Worker) Get(id uuid.UUID) (task.Task, error) {
	t, ok := w.store.Get(id)
	if !ok {
		return task.Task{}, task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	return t, nil
}

// List returns every task, in the order they were submitted.
func (w *Worker) List() []task.Task { return w.store.List() }

// Ready returns nil when the runtime answers, and otherwise an EUNAVAILABLE error saying why.
func (w *Worker) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := w.rt.Ping(ctx); err != nil {
		return task.Wrap(task.EUNAVAILABLE, err, "the container runtime does not answer")
	}
	return nil
}

// Stats returns the node's stats with the number of Running tasks.
func (w *Worker) Stats() (nodestats.Stats, error) {
	s, err := w.stats.Read()
	if err != nil {
		return nodestats.Stats{}, fmt.Errorf("read node stats: %w", err)
	}
	for _, t := range w.store.List() {
		if t.State == task.Running {
			s.TaskCount++
		}
	}
	return s, nil
}

// QueueLen returns the number of accepted operations not yet applied.
func (w *Worker) QueueLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.pending.Len()
	for _, l := range w.lanes {
		n += len(l.ops)
	}
	return n
}

// Run applies queued operations and watches the runtime until ctx is done. It returns nil after
// every goroutine it started has finished; operations under way finish first (each is bounded by
// its timeout), and containers are left running. Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("worker: Run called twice")
	}
	w.running = true
	w.wg.Add(2)
	w.mu.Unlock()

	go w.watch(ctx)
	go w.reconcileLoop(ctx)
	w.log.Info("worker started", "name", w.name)
	for {
		w.dispatch(ctx)
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			w.wg.Wait()
			w.log.Info("worker stopped", "name", w.name, "unapplied", w.QueueLen())
			return nil
		case <-w.notify:
		}
	}
}

// signal wakes the loop. Callers hold w.mu.
func (w *Worker) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// dispatch moves every queued operation to its task's lane.
func (w *Worker) dispatch(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.pending.Len() > 0 {
		w.route(ctx, w.pending.Dequeue().(op))
	}
}

// route appends o to its task's lane, starting the lane's goroutine if it has none. Callers hold
// w.mu. Operations routed after Run returned are dropped.
func (w *Worker) route(ctx context.Context, o op) {
	if !w.running || ctx.Err() != nil {
		return
	}
	l, ok := w.lanes[o.taskID]
	if !ok {
		l = &lane{}
		w.lanes[o.taskID] = l
		w.wg.Add(1)
		go w.runLane(ctx, o.taskID, l)
	}
	l.ops = append(l.ops, o)
}

// enqueueCheck routes an opCheck to the task's lane. It is how runtime events and reconciles
// reach a task.
func (w *Worker) enqueueCheck(ctx context.Context, taskID uuid.UUID, containerID, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.route(ctx, op{kind: opCheck, taskID: taskID, containerID: containerID, reason: reason})
}

func (w *Worker) runLane(ctx context.Context, id uuid.UUID, l *lane) {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(l.ops) == 0 || ctx.Err() != nil {
			delete(w.lanes, id)
			w.mu.Unlock()
			return
		}
		o := l.ops[0]
		l.ops = l.ops[1:]
		w.mu.Unlock()
		w.apply(ctx, o)
	}
}

// apply carries out one operation. Runtime calls run on a context that outlives ctx, bounded by
// their own timeouts, so that shutting the worker down never leaves a half-made container.
func (w *Worker) apply(ctx context.Context, o op) {
	opCtx := context.WithoutCancel(ctx)
	log := w.log.With("task", o.taskID)
	t, ok := w.store.Get(o.taskID)
	if !ok {
		log.Error("operation for an unknown task dropped")
		return
	}
	var err error
	switch o.kind {
	case opStart:
		err = w.start(opCtx, log, t, o.event)
	case opStop:
		err = w.stop(opCtx, log, t)
	case opCheck:
		err = w.check(opCtx, log, t, o.containerID, o.reason)
	}
	if err != nil {
		log.Error("task operation failed", "err", err)
	}
}

// transition moves t to state s, or fails with ECONFLICT when the state machine forbids it.
func transition(t *task.Task, s task.State) error {
	if !task.ValidTransition(t.State, s) {
		return task.Errorf(task.ECONFLICT, "task %s: %v → %v is not allowed", t.ID, t.State, s)
	}
	t.State = s
	return nil
}

// specOf returns the part of t a client chooses, with every field the worker reports cleared.
func specOf(t task.Task) task.Task {
	t = t.Clone()
	t.ContainerID = ""
	t.StartTime = time.Time{}
	t.FinishTime = time.Time{}
	t.HostPorts = nil
	t.ExitCode = 0
	t.Error = ""
	return t
}

// start (re)starts t as ev asks: the old container, if any, is stopped and removed, then a new
// one is started. The task goes to Scheduled, then Running or Failed.
func (w *Worker) start(ctx context.Context, log *slog.Logger, t task.Task, ev task.Event) error {
	if t.ContainerID != "" {
		if err := w.removeContainer(ctx, log, t.ContainerID); err != nil {
			return err
		}
	}
	next := specOf(ev.Task)
	next.State = t.State
	if err := transition(&next, task.Scheduled); err != nil {
		return err
	}
	if err := w.store.Put(next); err != nil {
		return fmt.Errorf("store task: %w", err)
	}
	t = next

	w.startSlots <- struct{}{}
	startCtx, cancel := context.WithTimeout(ctx, w.startTimeout)
	c, err := w.rt.Start(startCtx, t)
	cancel()
	<-w.startSlots

	if err != nil {
		if e := transition(&t, task.Failed); e != nil {
			return e
		}
		t.Error = err.Error()
		t.FinishTime = w.now()
		log.Warn("task failed to start", "err", err)
		return w.store.Put(t)
	}
	if err := transition(&t, task.Running); err != nil {
		return err
	}
	t.ContainerID = c.ID
	t.HostPorts = c.HostPorts
	t.StartTime = c.StartedAt
	if t.StartTime.IsZero() {
		t.StartTime = w.now()
	}
	log.Info("task running", "container", shortID(c.ID), "image", t.Image)
	return w.store.Put(t)
}

// stop stops and removes t's container. A Running task ends Completed; a task that already ended
// keeps its state and loses its container.
func (w *Worker) stop(ctx context.Context, log *slog.Logger, t task.Task) error {
	if t.ContainerID != "" {
		if err := w.removeContainer(ctx, log, t.ContainerID); err != nil {
			return err
		}
	}
	switch {
	case t.State == task.Running:
		if err := transition(&t, task.Completed); err != nil {
			return err
		}
		t.FinishTime = w.now()
		log.Info("task stopped")
	case t.State == task.Completed:
		return nil
	default:
		// A task that failed (or never got a container) cannot become Completed; it keeps its
		// state and its reason, and no longer has a container.
		t.ContainerID = ""
		log.Info("stopped task had already ended", "state", t.State)
	}
	return w.store.Put(t)
}

func (w *Worker) removeContainer(ctx context.Context, log *slog.Logger, id string) error {
	ctx, cancel := context.WithTimeout(ctx, w.stopTimeout)
	defer cancel()
	if err := w.rt.Stop(ctx, id); err != nil {
		return fmt.Errorf("stop container %s: %w", shortID(id), err)
	}
	log.Debug("container removed", "container", shortID(id))
	return nil
}

// check finds out what became of t's container containerID and records it: an exit, or the
// container's disappearance. It ignores containers that are no longer the task's.
func (w *Worker) check(ctx context.Context, log *slog.Logger, t task.Task, containerID, reason string) error {
	if containerID == "" || t.ContainerID != containerID {
		return nil
	}
	if t.State != task.Running {
		if reason == string(task.ContainerDestroyed) && t.State == task.Failed {
			// The worker clears ContainerID when it removes a container of an ended task, so a
			// destroy of the current one came from outside.
			t.Error = joinReason(t.Error, "container removed outside cube")
			t.ContainerID = ""
			return w.store.Put(t)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := w.rt.Inspect(ctx, containerID)
	cancel()
	switch {
	case task.ErrorCode(err) == task.ENOTFOUND:
		if e := transition(&t, task.Failed); e != nil {
			return e
		}
		t.ContainerID = ""
		t.Error = "container removed outside cube"
		t.FinishTime = w.now()
		log.Warn("task failed: container removed outside cube", "container", shortID(containerID))
		return w.store.Put(t)
	case err != nil:
		// The runtime did not answer: the task's state is unknown, not failed. The next reconcile
		// asks again.
		return fmt.Errorf("inspect container %s after %s: %w", shortID(containerID), reason, err)
	case c.Running:
		return nil
	}
	t.ExitCode = c.ExitCode
	t.FinishTime = c.FinishedAt
	if t.FinishTime.IsZero() {
		t.FinishTime = w.now()
	}
	next := task.Completed
	switch {
	case c.OOMKilled:
		next, t.Error = task.Failed, "OOMKilled"
	case c.ExitCode != 0:
		next, t.Error = task.Failed, fmt.Sprintf("exited with code %d", c.ExitCode)
	}
	if err := transition(&t, next); err != nil {
		return err
	}
	log.Info("task exited", "state", t.State, "exit_code", t.ExitCode, "oom", c.OOMKilled)
	return w.store.Put(t)
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
