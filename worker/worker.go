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
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
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
	// Start makes sure the task's image is present (as its PullPolicy says), then creates and
	// starts a container for the task, labelled with task.LabelTaskID, and returns it. It reports
	// its steps and pull progress to progress, which it never calls after returning. On failure it
	// leaves no container behind. An EFORBIDDEN error refuses the task as it is (a bind source
	// that leads out of the allowed paths): the task ends Failed and is not restarted.
	Start(ctx context.Context, t task.Task, progress func(task.StartStep)) (task.Container, error)
	// Stop stops the container: its stop signal, then after grace (0: the task's or the
	// runtime's default) a kill. A container that is already stopped or gone is success.
	Stop(ctx context.Context, containerID string, grace time.Duration) error
	// Remove removes the container, stopping it first if it runs. A container already gone, or
	// being removed, is success.
	Remove(ctx context.Context, containerID string) error
	// Inspect returns the container's current state, or an ENOTFOUND error when it is gone.
	Inspect(ctx context.Context, containerID string) (task.Container, error)
	// Exec runs cmd in the running container and returns its exit code and combined output.
	Exec(ctx context.Context, containerID string, cmd []string) (int, string, error)
	// List returns every container labelled with task.LabelTaskID, running or not.
	List(ctx context.Context) ([]task.Container, error)
	// Watch calls fn for each event about a labelled container, from since onwards, until ctx is
	// done (it then returns ctx.Err()) or the stream breaks (it returns why).
	Watch(ctx context.Context, since time.Time, fn func(task.ContainerEvent)) error
	// Ping returns nil when the runtime answers.
	Ping(ctx context.Context) error
	// Logs returns the container's output as text, stdout and stderr merged as lines, as opts
	// says. The caller reads it to the end (with opts.Follow it ends when the container ends or
	// ctx is done) and closes it. It fails with ENOTFOUND when the container is gone.
	Logs(ctx context.Context, containerID string, opts task.LogOptions) (io.ReadCloser, error)
	// Stats returns one sample of the container's resource use, or an ENOTFOUND error when it
	// is gone.
	Stats(ctx context.Context, containerID string) (task.ContainerStats, error)
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
	Capacity          Capacity         // what tasks may claim; zero fields are unlimited
	MaxQueue          int              // accepted operations waiting at most; default 10000
	MaxTasks          int              // tasks tracked at most; ended tasks are forgotten first; default 10000
	Rand              func() float64   // jitter source in [0, 1); default math/rand/v2
	Policy            task.Policy      // the host access tasks may ask for; default none
	// KeepOrphans makes the worker report the containers it may remove (of a task that was
	// stopped or has ended, or superseded by a later start of their task), not remove them.
	KeepOrphans  bool
	OrphanGrace  time.Duration // how long a container is removable before it is removed; default 1m
	PingInterval time.Duration // how often to ask whether the runtime answers; default 2s (each ask may take 5s)
	// RuntimeName names the runtime in what the worker tells clients when it does not answer
	// (GET /readyz, a task's Unconfirmed note), such as "the Docker Engine"; default "the
	// container runtime".
	RuntimeName string
	Retention   Retention // how many ended tasks are kept, and for how long
}

// Capacity is what the tasks on a worker may claim in all: the machine's CPUs and memory less
// what is kept for the host. A task claims its Cpu and Memory from when it is accepted until it
// ends.
type Capacity struct {
	CPU    float64 // cores
	Memory int64   // bytes
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
	slotWaiters    atomic.Int64  // starts waiting for a start slot

	capacity Capacity
	policy   task.Policy
	maxQueue int
	maxTasks int
	rand     func() float64

	// writeMu makes each read-modify-write of a task in the store atomic: a task's writes take
	// the lock of its stripe, so that writes of different tasks may reach a durable store at the
	// same time and share its transactions.
	writeMu [64]sync.Mutex

	mu       sync.Mutex // guards everything below
	pending  *queue.Queue
	notify   chan struct{} // has a value when pending may be non-empty
	lanes    map[uuid.UUID]*lane
	live     map[uuid.UUID]*live // what the worker holds for a task beyond its stored record
	stopping map[uuid.UUID]bool  // tasks with a stop accepted and not yet applied
	running  bool                // Run has started and not yet returned
	runCtx   context.Context     // Run's context, while running
	wg       sync.WaitGroup

	parked      []op               // operations waiting for the runtime to answer, in order
	parkedTasks map[uuid.UUID]bool // tasks with parked operations
	downErr     error              // why the runtime is thought not to answer; nil when it does
	downSince   time.Time          // since when
	watchCancel context.CancelFunc // ends the current event subscription
	orphans     map[string]orphan  // containers the worker may remove, since when and why
	reported    map[string]bool    // containers already reported: whose unknown, or removable and kept

	keepOrphans  bool
	orphanGrace  time.Duration
	pingInterval time.Duration
	runtimeName  string
	recovered    atomic.Bool // recoverState has finished
	changes      hub         // the task changes subscribers follow
	names        names       // which task holds each name among those that have not ended
	gc           gcState     // retention, and the removals under way (guarded by mu)
}

// lane is the list of operations waiting for one task. A lane exists while it has work; its
// goroutine applies the operations in order and removes the lane when it runs dry.
type lane struct {
	ops []op
}

type opKind int

const (
	opStart    opKind = iota // start or restart the task from event
	opStop                   // stop the task: the API's DELETE
	opCheck                  // find out what became of containerID and record it
	opRestart                // a back-off ended: start the task again
	opHealth                 // a health check's result for containerID
	opLaunch                 // start a container for a Scheduled task: a start that waited for the runtime
	opAdopt                  // take up a running container found at start-up: no restart
	opRelaunch               // start a Scheduled task again now, in a new container
	opPause                  // containerID was paused (paused true) or unpaused outside cube
	opRemove                 // stop the task, remove its container, forget it
)

// op is one unit of work on one task.
type op struct {
	kind        opKind
	taskID      uuid.UUID
	event       task.Event           // opStart
	containerID string               // opCheck, opHealth
	reason      string               // opCheck: what prompted it, for logs
	gen         int                  // opRestart: which back-off it ends
	health      string               // opHealth: the status
	result      *task.HealthResult   // opHealth: the check's result; nil for the runtime's own checks
	seq         uint64               // the stored order this op carries out, 0 for none
	died        *task.ContainerEvent // opCheck: the die event that prompted it, if one did
	paused      bool                 // opPause: paused, or unpaused
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
		lanes:          make(map[uuid.UUID]*lane),
		live:           make(map[uuid.UUID]*live),
		stopping:       make(map[uuid.UUID]bool),
		capacity:       cfg.Capacity,
		policy:         cfg.Policy,
		maxQueue:       cfg.MaxQueue,
		maxTasks:       cfg.MaxTasks,
		rand:           cfg.Rand,
		orphans:        make(map[string]orphan),
		parkedTasks:    make(map[uuid.UUID]bool),
		reported:       make(map[string]bool),
		keepOrphans:    cfg.KeepOrphans,
		orphanGrace:    cfg.OrphanGrace,
		pingInterval:   cfg.PingInterval,
		runtimeName:    cfg.RuntimeName,
		gc:             gcState{retention: cfg.Retention.withDefaults()},
	}
	if w.runtimeName == "" {
		w.runtimeName = "the container runtime"
	}
	if w.orphanGrace <= 0 {
		w.orphanGrace = time.Minute
	}
	if w.pingInterval <= 0 {
		w.pingInterval = 2 * time.Second
	}
	if w.maxQueue <= 0 {
		w.maxQueue = 10000
	}
	if w.maxTasks <= 0 {
		w.maxTasks = 10000
	}
	if w.rand == nil {
		w.rand = rand.Float64
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
	if w.store.Len() > 0 { // a durable store's tasks hold their names
		for _, t := range w.store.List() {
			w.names.update(task.Task{}, t)
		}
	}
	// Orders accepted before a restart and not yet applied come first.
	for _, o := range w.store.Orders() {
		switch o.Kind {
		case task.OrderStart:
			if o.Event != nil {
				w.pending.Enqueue(op{kind: opStart, taskID: o.TaskID, event: *o.Event, seq: o.Seq})
			}
		case task.OrderStop:
			w.stopping[o.TaskID] = true
			w.pending.Enqueue(op{kind: opStop, taskID: o.TaskID, seq: o.Seq})
		case task.OrderRemove:
			w.markRemovingLocked(o.TaskID, "by an order accepted before a restart")
			w.pending.Enqueue(op{kind: opRemove, taskID: o.TaskID, seq: o.Seq})
		}
	}
	w.startSlots = make(chan struct{}, n)
	w.changes.base = seqBase(time.Now()) // the wall clock, not cfg.Now: numbers must outrun the last run's
	w.changes.seq = w.changes.base
	return w
}

// Name returns the worker's name.
func (w *Worker) Name() string { return w.name }

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
	if err := w.policy.Check(ev.Task); err != nil {
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
		if w.stopping[cur.ID] {
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
	w.pending.Enqueue(op{kind: opStart, taskID: ev.Task.ID, event: ev, seq: order.Seq})
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
	if (cur.State == task.Completed && cur.ContainerID == "") || w.stopping[id] {
		return nil
	}
	if err := w.roomInQueue(); err != nil {
		return err
	}
	order, err := w.store.Accept(nil, task.Order{Kind: task.OrderStop, TaskID: id})
	if err != nil {
		return fmt.Errorf("store the stop of task %s: %w", id, err)
	}
	w.stopping[id] = true
	w.pending.Enqueue(op{kind: opStop, taskID: id, seq: order.Seq})
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
	if n >= w.maxQueue {
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
	t.ClearLiveFields() // stored by a path or a version that did not apply it
	if note := w.unconfirmed(); note != "" && !t.State.Terminal() {
		t.Unconfirmed = note
	}
	return t, nil
}

// List returns every task, in the order they were submitted. While the runtime does not answer,
// tasks that have not ended carry a note that their state is unconfirmed.
//
// The tasks are shallow copies (Store.Snapshot): each Task's fields are the caller's to set, but
// its maps, slices and pointers are the stored task's, which never change and must not be
// written. So a list copies nothing it does not send: GET /tasks encodes it as it is.
func (w *Worker) List() []task.Task { return w.AppendList(nil) }

// AppendList appends what List returns to dst and returns the extended slice: a caller that
// lists often can reuse one slice (clearing it after, so that it keeps no old task alive).
func (w *Worker) AppendList(dst []task.Task) []task.Task {
	gone := w.removingNow() // before the store: a removal that ends in between leaves no task
	n := len(dst)
	list := w.store.Snapshot(dst)
	if gone != nil {
		list = append(list[:n], slices.DeleteFunc(list[n:], func(t task.Task) bool { return gone[t.ID] })...)
	}
	note := w.unconfirmed()
	for i := n; i < len(list); i++ {
		list[i].ClearLiveFields()
		if note != "" && !list[i].State.Terminal() {
			list[i].Unconfirmed = note
		}
	}
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
		t.ClearLiveFields()
		if note != "" && !t.State.Terminal() {
			t.Unconfirmed = note
		}
		if err := f(&t); err != nil {
			return err
		}
	}
	return nil
}

// Ready returns nil when the worker has recovered its state at start and the runtime answers,
// and otherwise an EUNAVAILABLE error saying why (wrapping the runtime's error). It answers from
// what the worker last saw of the runtime, its ping every PingInterval and every call it made,
// and so costs no runtime call: a readiness probe cannot load the Engine.
func (w *Worker) Ready(ctx context.Context) error {
	w.mu.Lock()
	err := w.downErr
	w.mu.Unlock()
	recovered := w.recovered.Load()
	switch {
	case err != nil && !recovered:
		return task.Wrap(task.EUNAVAILABLE, err, w.runtimeName+" does not answer, so the worker cannot recover its tasks yet")
	case err != nil:
		return task.Wrap(task.EUNAVAILABLE, err, w.runtimeName+" does not answer")
	case !recovered:
		return task.Errorf(task.EUNAVAILABLE, "the worker is still recovering its tasks from %s", w.runtimeName)
	}
	return nil
}

// Stats returns the node's stats with the number of Running tasks.
func (w *Worker) Stats() (nodestats.Stats, error) {
	s, err := w.stats.Read()
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
	n := w.pending.Len() + len(w.parked) + int(w.slotWaiters.Load())
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
	w.runCtx = ctx
	w.wg.Add(4)
	w.mu.Unlock()

	w.log.Info("worker started", "name", w.name)
	since := w.now() // events from here on: none is missed between the recovery's list and the watch
	w.recoverState(ctx)
	w.recovered.Store(true)
	go w.watch(ctx, since)
	go w.reconcileLoop(ctx)
	go w.pingLoop(ctx)
	go w.gcLoop(ctx)
	for {
		w.dispatch()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			w.wg.Wait()
			w.mu.Lock()
			for _, l := range w.live {
				l.cancelRestart() // no lane runs now
			}
			w.mu.Unlock()
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
func (w *Worker) dispatch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.pending.Len() > 0 {
		w.route(w.pending.Dequeue().(op))
	}
}

// route appends o to its task's lane, starting the lane's goroutine if it has none. Lanes live
// on Run's context, whoever asks for the operation. Callers hold w.mu. Operations routed when
// Run is not running are dropped.
func (w *Worker) route(o op) {
	if !w.running || w.runCtx.Err() != nil {
		return
	}
	if w.parkedTasks[o.taskID] {
		// The task waits for the runtime: what follows waits behind what was parked, in order.
		w.parked = append(w.parked, o)
		return
	}
	l, ok := w.lanes[o.taskID]
	if !ok {
		l = &lane{}
		w.lanes[o.taskID] = l
		w.wg.Add(1)
		go w.runLane(w.runCtx, o.taskID, l)
	}
	l.ops = append(l.ops, o)
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
// their own timeouts, so that shutting the worker down never leaves a half-made container. An
// operation that could not finish because the runtime did not answer is parked, its stored order
// kept, and carried out again when the runtime is back.
func (w *Worker) apply(ctx context.Context, o op) {
	opCtx := context.WithoutCancel(ctx)
	log := w.log.With("task", o.taskID)
	if _, ok := w.store.Get(o.taskID); !ok {
		// A container event can follow the removal of its task; a removal replayed after a
		// crash can find its task forgotten already (the order outlived the record). Nothing
		// of the task may stay marked as being removed or stopped: a later task with its ID
		// would be hidden, or never started.
		log.Debug("operation for a task the worker does not know dropped", "op", o.kind)
		if o.kind == opRemove || o.kind == opStop {
			w.mu.Lock()
			delete(w.gc.removing, o.taskID)
			delete(w.stopping, o.taskID)
			w.mu.Unlock()
		}
		w.done(log, o)
		return
	}
	l := w.liveOf(o.taskID)
	var err error
	switch o.kind {
	case opStart:
		err = w.start(ctx, opCtx, log, l, o)
	case opStop:
		err = w.stop(opCtx, log, l, o.taskID, o.seq)
	case opCheck:
		err = w.check(ctx, opCtx, log, l, o.taskID, o.containerID, o.reason, o.died)
	case opRestart:
		err = w.restartDue(ctx, opCtx, log, l, o.taskID, o.gen)
	case opHealth:
		err = w.healthResult(ctx, opCtx, log, l, o)
	case opLaunch:
		err = w.relaunch(ctx, opCtx, log, l, o.taskID, o.seq)
	case opAdopt:
		err = w.adopt(ctx, opCtx, log, l, o.taskID, o.containerID)
	case opRelaunch:
		err = w.restartNow(ctx, opCtx, log, l, o.taskID)
	case opPause:
		err = w.pauseChanged(ctx, opCtx, log, l, o.taskID, o.containerID, o.paused)
	case opRemove:
		err = w.remove(opCtx, log, l, o)
	}
	var parked *parkedError
	switch {
	case errors.As(err, &parked):
		w.park(log, parked.op, err)
		return
	case err != nil:
		log.Error("task operation failed", "err", err)
	}
	w.done(log, o)
}

// done forgets the stored order o carried out.
func (w *Worker) done(log *slog.Logger, o op) {
	if o.seq == 0 {
		return
	}
	if err := w.store.Done(o.seq); err != nil {
		log.Error("forget an applied order", "seq", o.seq, "err", err)
	}
}

// liveOf returns the worker's in-memory state of a task, making it when there is none.
func (w *Worker) liveOf(id uuid.UUID) *live {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.live[id]
	if !ok {
		l = &live{}
		w.live[id] = l
	}
	return l
}

// modify applies fn to the stored task with the given ID and stores the result, atomically with
// respect to every other modify of that task. fn's error aborts the change.
func (w *Worker) modify(id uuid.UUID, fn func(t *task.Task) error) (task.Task, error) {
	mu := w.writeLock(id)
	mu.Lock()
	defer mu.Unlock()
	t, ok := w.store.Get(id)
	if !ok {
		return task.Task{}, task.Errorf(task.ENOTFOUND, "task %s not found", id)
	}
	before := t.Clone()
	if err := fn(&t); err != nil {
		return t, err
	}
	t.ClearLiveFields()
	// The name is freed before the task is seen ended, so that a client that sees it ended may
	// take its name at once.
	w.names.update(before, t)
	if err := w.store.Put(t); err != nil {
		w.names.update(t, before)
		return t, fmt.Errorf("store task %s: %w", id, err)
	}
	w.publish(before, t)
	return t, nil
}

// writeLock returns the lock of the task's stripe of writeMu.
func (w *Worker) writeLock(id uuid.UUID) *sync.Mutex {
	return &w.writeMu[id[15]%uint8(len(w.writeMu))]
}

// publish tells subscribers what changed between two versions of a task.
func (w *Worker) publish(before, after task.Task) {
	changes := diff(before, after)
	for i := range changes {
		if changes[i].Time.IsZero() {
			changes[i].Time = w.now()
		}
	}
	w.changes.publish(changes)
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
	t.HealthStatus = ""
	t.LastHealthCheck = nil
	t.Pull = nil
	t.Events = nil
	t.LastEvent = ""
	t.Unconfirmed = ""
	t.RestartStreak = 0
	t.Paused = false
	return t
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
