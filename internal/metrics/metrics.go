// Package metrics keeps a worker's Prometheus metrics in a registry of its own (never the global
// default, so that several workers in one process, as in tests, do not collide) and serves them
// in the Prometheus text format.
//
// The metrics, all prefixed cube_:
//
//	cube_tasks{state}                          gauge: tasks by state, counted at scrape time
//	cube_queue_depth                           gauge: operations that wait: queued, in a lane, parked, or for a start slot
//	cube_task_starts_total                     counter: containers started (Started records)
//	cube_task_exits_total                      counter: containers that ended by themselves (Exited, OOMKilled)
//	cube_task_restarts_total                   counter: restarts the restart policy decided (Restarting records)
//	cube_task_ooms_total                       counter: containers killed for lack of memory (OOMKilled)
//	cube_task_start_duration_seconds{phase}    histogram: submit to running, by phase (see below)
//	cube_docker_call_duration_seconds{op}      histogram: container runtime calls, by operation
//	cube_docker_call_errors_total{op,kind}     counter: failed runtime calls, by operation and error kind
//	cube_http_requests_total{method,route,code} counter: API requests by route pattern and status
//
// and the Go runtime's and the process's own (go_*, process_*).
//
// The task counters follow the worker's change stream. The start phases come from the Records of
// a task whose start began with a Received record (a new task, or a restart asked for by an
// event), read when its Started record arrives:
//
//	pull    Received → Pulled, only when the image was pulled: the wait for a start slot, the
//	        image check and the pull (Received → Pulling → Pulled)
//	create  Pulled, or Received when nothing was pulled → Created: the wait for a slot and the
//	        image check when nothing was pulled, and the container's creation
//	start   Created → Started: starting the container and reading its state back
//	total   Received → Started: the sum of the phases
//
// Restarts the restart policy makes have no submit and are not observed. The runtime latency
// covers every call of worker.Runtime but Watch (a long-lived stream): start (image pull
// included), stop, remove, inspect, exec, list, list_task (a failed start's look for a container
// an earlier attempt made), ping, logs (until the output starts) and stats.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source is what the metrics read from a worker; *worker.Worker satisfies it.
type Source interface {
	Each(f func(t *task.Task) error) error
	Get(id uuid.UUID) (task.Task, error)
	QueueLen() int
	Changes(after uint64) ([]task.Change, <-chan task.Change, func())
}

// Options configure Metrics. Zero fields take the defaults noted.
type Options struct {
	Logger *slog.Logger // default: slog.Default()
}

// Metrics holds a worker's metrics. Create it with New, wrap the worker's runtime with Runtime,
// hand it the worker with Track, and run Run; Handler serves the metrics.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	starts, exits, restarts, ooms prometheus.Counter
	startPhases                   *prometheus.HistogramVec
	callDuration                  *prometheus.HistogramVec
	callErrors                    *prometheus.CounterVec
	httpRequests                  *prometheus.CounterVec

	mu     sync.Mutex
	src    Source
	exited recent // tasks whose last record of note is an exit: a late OOMKilled is no new exit
}

// The start phases, the values of cube_task_start_duration_seconds's label phase.
const (
	PhasePull   = "pull"
	PhaseCreate = "create"
	PhaseStart  = "start"
	PhaseTotal  = "total"
)

// ops are the runtime operations timed, the values of the label op.
var ops = []string{"start", "stop", "remove", "inspect", "exec", "list", "list_task", "ping", "logs", "stats"}

// New returns Metrics with a registry of their own.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), log: opts.Logger}
	if m.log == nil {
		m.log = slog.Default()
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cube", Name: name, Help: help})
	}
	m.starts = counter("task_starts_total", "Task containers started (Started records).")
	m.exits = counter("task_exits_total", "Task containers that ended by themselves (Exited or OOMKilled records).")
	m.restarts = counter("task_restarts_total", "Task restarts the restart policy decided (Restarting records).")
	m.ooms = counter("task_ooms_total", "Task containers killed for lack of memory (OOMKilled records).")
	m.startPhases = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "cube", Name: "task_start_duration_seconds",
		Help:    "Time from a task's submit to its container running, by phase: pull (Received to Pulled, when pulled), create ((Pulled or Received) to Created), start (Created to Started), total (Received to Started).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"phase"})
	m.callDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "cube", Name: "docker_call_duration_seconds",
		Help:    "Latency of container runtime (Docker Engine) calls, by operation; failed calls included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"op"})
	m.callErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cube", Name: "docker_call_errors_total",
		Help: "Failed container runtime (Docker Engine) calls, by operation and error kind (not_found, conflict, invalid, unavailable, internal, ...).",
	}, []string{"op", "kind"})
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cube", Name: "http_requests_total",
		Help: "API requests answered, by method, route pattern (\"unmatched\" when no route matched) and status code.",
	}, []string{"method", "route", "code"})
	for _, p := range []string{PhasePull, PhaseCreate, PhaseStart, PhaseTotal} {
		m.startPhases.WithLabelValues(p)
	}
	for _, op := range ops {
		m.callDuration.WithLabelValues(op)
	}
	m.reg.MustRegister(m.starts, m.exits, m.restarts, m.ooms, m.startPhases, m.callDuration, m.callErrors, m.httpRequests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&tasksCollector{m: m, desc: prometheus.NewDesc("cube_tasks", "Tasks the worker tracks, by state.", []string{"state"}, nil)},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cube", Name: "queue_depth", Help: "Operations that wait, wherever they wait: accepted and not yet applied (queued, in a task's lane, parked until the container runtime answers) and starts waiting for a start slot."},
			func() float64 {
				if src := m.source(); src != nil {
					return float64(src.QueueLen())
				}
				return 0
			}))
	return m
}

// Registry returns the registry the metrics are kept in, for a caller that adds its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the handler of GET /metrics: the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
	})
}

// Track makes the metrics read the tasks, the queue and the change stream of src. Call it once,
// before Run.
func (m *Metrics) Track(src Source) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.src = src
}

func (m *Metrics) source() Source {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.src
}

// Run counts the task changes of the tracked worker until ctx is done, and then returns nil. It
// starts from the oldest change the worker keeps; when the worker cuts it off (it fell behind)
// it subscribes again after the last change it counted, so that it misses nothing the worker
// still keeps and counts nothing twice. It fails at once when Track was not called.
func (m *Metrics) Run(ctx context.Context) error {
	src := m.source()
	if src == nil {
		return errors.New("metrics: Run before Track")
	}
	var last uint64
	for {
		backlog, changes, cancel := src.Changes(last)
		for _, c := range backlog {
			m.count(src, c)
			last = c.Seq
		}
		cut := false
		for !cut {
			select {
			case <-ctx.Done():
				cancel()
				return nil
			case c, ok := <-changes:
				if !ok {
					cut = true
					break
				}
				m.count(src, c)
				last = c.Seq
			}
		}
		cancel()
		m.log.Debug("metrics: the change stream was cut off; subscribing again", "after", last)
	}
}

// count counts one change.
func (m *Metrics) count(src Source, c task.Change) {
	switch c.Type {
	case task.RecordStarted:
		m.starts.Inc()
		m.exited.forget(c.TaskID)
		m.observeStart(src, c)
	case task.RecordExited:
		m.exits.Inc()
		m.exited.add(c.TaskID)
	case task.RecordOOMKilled:
		m.ooms.Inc()
		// An OOM kill the runtime reports after the exit was recorded is the same exit.
		if !m.exited.has(c.TaskID) {
			m.exits.Inc()
			m.exited.add(c.TaskID)
		}
	case task.RecordRestarting:
		m.restarts.Inc()
	}
}

// observeStart observes the phases of the start whose Started record c reports, from the
// task's Records.
func (m *Metrics) observeStart(src Source, c task.Change) {
	t, err := src.Get(c.TaskID)
	if err != nil {
		return
	}
	for phase, d := range startPhases(t.Events, c.Time) {
		m.startPhases.WithLabelValues(phase).Observe(d.Seconds())
	}
}

// startPhases returns the phases of the start whose Started record is at startedAt, when that
// start began with a Received record; see the package comment.
func startPhases(records []task.Record, startedAt time.Time) map[string]time.Duration {
	end := -1
	for i := len(records) - 1; i >= 0; i-- {
		if records[i].Type == task.RecordStarted && records[i].Time.Equal(startedAt) {
			end = i
			break
		}
	}
	if end < 0 {
		return nil
	}
	var created, pulled, received *task.Record
walk:
	for i := end - 1; i >= 0; i-- {
		r := &records[i]
		switch r.Type {
		case task.RecordCreated:
			if created == nil {
				created = r
			}
		case task.RecordPulled:
			if pulled == nil {
				pulled = r
			}
		case task.RecordPulling:
		case task.RecordReceived:
			received = r
			break walk
		default: // an earlier run: a restart the policy made
			break walk
		}
	}
	if received == nil || created == nil {
		return nil
	}
	started := records[end].Time
	out := map[string]time.Duration{
		PhaseStart: started.Sub(created.Time),
		PhaseTotal: started.Sub(received.Time),
	}
	if pulled != nil {
		out[PhasePull] = pulled.Time.Sub(received.Time)
		out[PhaseCreate] = created.Time.Sub(pulled.Time)
	} else {
		out[PhaseCreate] = created.Time.Sub(received.Time)
	}
	return out
}

// ObserveHTTP counts one answered API request; it is the API's Observe hook. route is the route
// pattern, "" when no route matched. Methods beyond the standard ones count as "other", so that
// clients cannot make labels at will.
func (m *Metrics) ObserveHTTP(method, route string, status int, d time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other"
	}
	if route == "" {
		route = "unmatched"
	}
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
}

// observeCall records one runtime call.
func (m *Metrics) observeCall(op string, start time.Time, err error) {
	m.callDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.callErrors.WithLabelValues(op, string(task.ErrorCode(err))).Inc()
	}
}

// tasksCollector counts the tracked worker's tasks by state at scrape time.
type tasksCollector struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (c *tasksCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *tasksCollector) Collect(ch chan<- prometheus.Metric) {
	var n [5]int
	if src := c.m.source(); src != nil {
		// Each, not List: a scrape copies no task, which at 10,000 tracked is megabytes a scrape.
		src.Each(func(t *task.Task) error {
			if t.State.Valid() {
				n[t.State]++
			}
			return nil
		})
	}
	for s := task.Pending; s <= task.Failed; s++ {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n[s]), s.String())
	}
}

// recent is a bounded set of task IDs, the oldest forgotten first.
type recent struct {
	mu    sync.Mutex
	set   map[uuid.UUID]bool
	order []uuid.UUID
}

// recentMax bounds recent: a late OOM event follows its exit within moments.
const recentMax = 1024

func (r *recent) add(id uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set = make(map[uuid.UUID]bool)
	}
	if r.set[id] {
		return
	}
	r.set[id] = true
	r.order = append(r.order, id)
	for len(r.order) > recentMax {
		delete(r.set, r.order[0])
		r.order = r.order[1:]
	}
}

func (r *recent) has(id uuid.UUID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set[id]
}

func (r *recent) forget(id uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.set, id) // its place in order goes when it comes up
}
