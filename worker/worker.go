package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cube-orchestrator/cube/internal/nodestats"
	"github.com/cube-orchestrator/cube/task"
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
	// ListTask returns those of List's containers that are task id's: what a start that failed
	// looks through for a container an earlier attempt made, at the cost of a few containers,
	// not of every one on the node.
	ListTask(ctx context.Context, id uuid.UUID) ([]task.Container, error)
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

// DefaultReconcileInterval is how often the worker compares the runtime's containers with its
// tasks unless told otherwise: the safety net under the runtime's event stream, which brings
// every exit at once (a broken stream is subscribed to again and reconciled at once), so it need
// not run often; each compare lists every container.
const DefaultReconcileInterval = 30 * time.Second

// Config configures a Worker. Zero fields take the defaults noted.
type Config struct {
	Name              string           // the worker's name, for logs
	Concurrency       int              // container starts under way at once; default 4
	Store             Store            // default: a new MemoryStore
	Logger            *slog.Logger     // default: slog.Default()
	Now               func() time.Time // the clock; default time.Now
	ReconcileInterval time.Duration    // how often to compare the runtime with the store; default DefaultReconcileInterval
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
// It keeps what its tasks share; what one task is doing lives in the task's runner (runner.go).
type Worker struct {
	cfg      Config // as New was given it, every default filled in
	rt       Runtime
	store    Store
	log      *slog.Logger
	capacity Capacity // cfg.Capacity, where fits reads it

	// writeMu makes each read-modify-write of a task in the store atomic: a task's writes take
	// the lock of its stripe, so that writes of different tasks may reach a durable store at the
	// same time and share its transactions.
	writeMu [64]sync.Mutex

	mu       sync.Mutex            // guards everything below, and the runners' shared fields
	intake   opQueue               // accepted operations not yet handed to their runners
	notify   chan struct{}         // has a value when intake may be non-empty
	runners  map[uuid.UUID]*runner // one per task with work or state beyond its record
	queued   int                   // operations in the runners' backlogs, parked ones too
	removals int                   // runners with a removal accepted and not yet done
	running  bool                  // Run has started and not yet returned
	wg       sync.WaitGroup        // every goroutine Run started, runners' and probes' too
	outage   outage                // whether the runtime answers, and what waits for it
	owned    ownership             // containers the worker may remove, and those reported
	slots    startSlots            // the starts under way at once, and those waiting for a slot

	recovered atomic.Bool   // recoverState has finished
	adopting  chan struct{} // a token per container inspection under way to take one up at start-up
	changes   hub           // the task changes subscribers follow
	names     names         // which task holds each name among those that have not ended
}

// New returns a Worker that runs tasks through rt.
func New(rt Runtime, cfg Config) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{
		cfg:      cfg,
		rt:       rt,
		store:    cfg.Store,
		log:      cfg.Logger,
		capacity: cfg.Capacity,
		intake:   newOpQueue(),
		notify:   make(chan struct{}, 1),
		runners:  make(map[uuid.UUID]*runner),
		adopting: make(chan struct{}, adoptInspections),
		owned:    ownership{orphans: make(map[string]orphan), reported: make(map[string]bool)},
	}
	w.slots.free = cfg.Concurrency
	if w.store.Len() > 0 { // a durable store's tasks hold their names
		for _, t := range w.store.Refs(nil) {
			w.names.update(task.Task{}, *t)
		}
	}
	// Orders accepted before a restart and not yet applied come first.
	for _, o := range w.store.Orders() {
		switch o.Kind {
		case task.OrderStart:
			if o.Event != nil {
				w.intake.push(op{kind: opStart, taskID: o.TaskID, event: o.Event, seq: o.Seq})
			}
		case task.OrderStop:
			w.runnerLocked(o.TaskID).stopping = true
			w.intake.push(op{kind: opStop, taskID: o.TaskID, seq: o.Seq})
		case task.OrderRemove:
			w.markRemovingLocked(o.TaskID, "by an order accepted before a restart")
			w.intake.push(op{kind: opRemove, taskID: o.TaskID, seq: o.Seq})
		}
	}
	// Change numbers come from the wall clock, not cfg.Now: they must outrun the last run's
	// whatever clock a test or a caller injects, and a fake clock that starts at a fixed time
	// would number a restarted worker's changes below those its subscribers have already seen.
	w.changes.base = seqBase(time.Now())
	w.changes.seq = w.changes.base
	return w
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Store == nil {
		cfg.Store = &MemoryStore{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 2 * time.Minute
	}
	if cfg.Stats == (nodestats.Reader{}) {
		cfg.Stats = nodestats.Reader{ProcRoot: "/proc", DiskPath: "/"}
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 10000
	}
	if cfg.MaxTasks <= 0 {
		cfg.MaxTasks = 10000
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = time.Minute
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 2 * time.Second
	}
	if cfg.RuntimeName == "" {
		cfg.RuntimeName = "the container runtime"
	}
	cfg.Retention = cfg.Retention.withDefaults()
	return cfg
}

// Name returns the worker's name.
func (w *Worker) Name() string { return w.cfg.Name }

// now reads the worker's clock, Config.Now.
func (w *Worker) now() time.Time { return w.cfg.Now() }

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
	w.wg.Add(4)
	w.mu.Unlock()

	w.log.Info("worker started", "name", w.cfg.Name)
	since := w.now() // events from here on: none is missed between the recovery's list and the watch
	w.recoverState(ctx)
	w.recovered.Store(true)
	go w.watch(ctx, since)
	go w.reconcileLoop(ctx)
	go w.pingLoop(ctx)
	go w.gcLoop(ctx)
	for {
		w.dispatch(ctx)
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			w.wg.Wait()
			w.mu.Lock()
			for _, r := range w.runners {
				r.cancelRestartLocked() // no runner's goroutine runs now
			}
			w.mu.Unlock()
			w.log.Info("worker stopped", "name", w.cfg.Name, "unapplied", w.QueueLen())
			return nil
		case <-w.notify:
		}
	}
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
