package task

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
)

// PortSet is a set of container ports such as "7777/tcp", in the JSON shape of Docker's port set:
// {"7777/tcp":{}}.
type PortSet map[string]struct{}

// PortBinding is one host address a container port is published on.
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string
}

// PortMap maps a container port such as "7777/tcp" to the host addresses it is published on, in
// the JSON shape of Docker's port map.
type PortMap map[string][]PortBinding

// Task is one container the worker runs, with what was asked for (the spec: Name, Image, Cpu, …)
// and what became of it (State, ContainerID, HostPorts, times, ExitCode, Error).
//
// The JSON keys are the Go field names. They match the Task of the book's Cube manager, which
// sends and reads them unchanged; do not rename them.
type Task struct {
	ID            uuid.UUID
	ContainerID   string
	Name          string
	State         State
	Image         string
	Cpu           float64 // cores
	Memory        int64   // bytes; a hard limit
	Disk          int64   // bytes; a scheduling hint for managers, not enforced by the worker
	ExposedPorts  PortSet
	PortBindings  map[string]string // container port ("7777/tcp") to host port ("8080")
	RestartPolicy string
	StartTime     time.Time
	FinishTime    time.Time
	HostPorts     PortMap
	HealthCheck   string
	RestartCount  int

	Env      []string // KEY=value
	Cmd      []string
	ExitCode int
	Error    string // why the task failed, or why it waits to restart; empty otherwise

	// cube's own spec fields beyond the book's. All are optional.
	Restart           *RestartSpec  `json:",omitempty"` // tunes RestartPolicy's back-off
	Health            *HealthSpec   `json:",omitempty"` // a structured health check
	PullPolicy        string        `json:",omitempty"` // "if-not-present" (default), "always" or "never"
	RegistryAuth      *RegistryAuth `json:",omitempty"` // credentials for a private registry; never shown
	MemoryReservation int64         `json:",omitempty"` // bytes; a soft limit
	PidsLimit         int64         `json:",omitempty"` // the most processes the container may have
	StopTimeout       int           `json:",omitempty"` // seconds a stop waits before killing; default 10
	StopSignal        string        `json:",omitempty"` // the signal a stop sends first; default the image's, or SIGTERM

	// Host access. Each is refused (EFORBIDDEN) unless the worker was started with an allowance
	// for it; see Policy.Check.
	Privileged  bool     `json:",omitempty"`
	NetworkMode string   `json:",omitempty"` // "", "bridge" or "none"; "host" needs an allowance
	PidMode     string   `json:",omitempty"` // "" ; "host" needs an allowance
	CapAdd      []string `json:",omitempty"` // Linux capabilities to add
	Devices     []string `json:",omitempty"` // host devices, "/dev/x[:/dev/y[:rwm]]"
	Binds       []string `json:",omitempty"` // bind mounts, "/host/path:/container/path[:ro]"

	// cube's own status fields beyond the book's.
	HealthStatus    string        `json:",omitempty"` // "starting", "healthy" or "unhealthy"; empty without a check
	LastHealthCheck *HealthResult `json:",omitempty"`
	Pull            *PullProgress `json:",omitempty"` // while the image is being pulled
	LastEvent       string        `json:",omitempty"` // the ID of the event that last (re)started the task
	RestartStreak   int           `json:",omitempty"` // restarts in the current row, which Restart.MaxAttempts bounds
	Unconfirmed     string        `json:",omitempty"` // set while the runtime does not answer: the state is as last seen
	Paused          bool          `json:",omitempty"` // the Running task's container is paused (docker pause): no health, no checks
	Events          []Record      `json:",omitempty"` // the task's last MaxRecords happenings, oldest first
}

// RegistryAuth holds credentials for pulling a task's image from a private registry. The worker
// uses them and never shows them: [Task.Redacted] drops them from every answer and log.
type RegistryAuth struct {
	Username string
	Password string
}

// HealthSpec is a health check the worker runs against a task's container.
type HealthSpec struct {
	Type        string   `json:",omitempty"` // "http", "tcp" or "exec"; default "http"
	Path        string   `json:",omitempty"` // http: the path to GET; healthy on a 2xx answer; default "/"
	Port        int      `json:",omitempty"` // http, tcp: the container port; default the task's first port
	Command     []string `json:",omitempty"` // exec: run in the container; healthy on exit code 0
	Interval    Duration `json:",omitempty"` // between checks; default 10s
	Timeout     Duration `json:",omitempty"` // for one check; default 2s
	Retries     int      `json:",omitempty"` // failures in a row that make the task unhealthy; default 3
	StartPeriod Duration `json:",omitempty"` // after a start, failures in this grace do not count
}

// The kinds of health check.
const (
	HealthHTTP = "http"
	HealthTCP  = "tcp"
	HealthExec = "exec"
)

// The health statuses a task reports.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// HealthResult is the outcome of the latest health check.
type HealthResult struct {
	Time          time.Time
	Healthy       bool
	Output        string // what the check saw: a status line, a dial error, a command's output
	FailingStreak int    // failed checks in a row
}

// PullProgress is how far the pull of a task's image has come.
type PullProgress struct {
	Layers     int   // layers seen so far
	LayersDone int   // layers downloaded and extracted, or already present
	Bytes      int64 // bytes downloaded
	BytesTotal int64 // bytes to download, as far as known
}

// The pull policies.
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// MaxRecords is how many Records a task keeps.
const MaxRecords = 50

// Record is one thing that happened to a task, Nomad-style.
type Record struct {
	Time    time.Time
	Type    string
	Message string `json:",omitempty"`
}

// The types of Record.
const (
	RecordReceived      = "Received"
	RecordPulling       = "Pulling"
	RecordPulled        = "Pulled"
	RecordCreated       = "Created"
	RecordStarted       = "Started"
	RecordExited        = "Exited"
	RecordOOMKilled     = "OOMKilled"
	RecordUnhealthy     = "Unhealthy"
	RecordHealthy       = "Healthy"
	RecordRestarting    = "Restarting"
	RecordNotRestarting = "NotRestarting"
	RecordKilling       = "Killing"
	RecordKilled        = "Killed"
	RecordStopped       = "Stopped" // a stop ended the task Completed
	RecordFailed        = "Failed"
	RecordPaused        = "Paused"   // the container was paused outside cube: it runs no code
	RecordUnpaused      = "Unpaused" // and unpaused again
	// RecordRemoved is the last change of a task that was removed: its container is gone and
	// the worker forgot it. It is never one of a task's Events.
	RecordRemoved = "Removed"
)

// AddRecord appends a Record to the task's Events, keeping the last MaxRecords.
func (t *Task) AddRecord(now time.Time, typ, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	t.Events = append(t.Events, Record{Time: now, Type: typ, Message: msg})
	if n := len(t.Events); n > MaxRecords {
		t.Events = append(t.Events[:0:0], t.Events[n-MaxRecords:]...)
	}
}

// Redacted returns a copy of t without secrets, fit for an API answer or a log.
func (t Task) Redacted() Task {
	t = t.Clone()
	if t.RegistryAuth != nil {
		t.RegistryAuth = nil
	}
	return t
}

// Clone returns a deep copy of t: it shares no map or slice with t.
func (t Task) Clone() Task {
	t.ExposedPorts = maps.Clone(t.ExposedPorts)
	t.PortBindings = maps.Clone(t.PortBindings)
	if t.HostPorts != nil {
		hp := make(PortMap, len(t.HostPorts))
		for k, v := range t.HostPorts {
			hp[k] = slices.Clone(v)
		}
		t.HostPorts = hp
	}
	t.Env = slices.Clone(t.Env)
	t.Cmd = slices.Clone(t.Cmd)
	t.CapAdd = slices.Clone(t.CapAdd)
	t.Devices = slices.Clone(t.Devices)
	t.Binds = slices.Clone(t.Binds)
	if t.Restart != nil {
		r := *t.Restart
		t.Restart = &r
	}
	if t.Health != nil {
		h := *t.Health
		h.Command = slices.Clone(h.Command)
		t.Health = &h
	}
	if t.RegistryAuth != nil {
		a := *t.RegistryAuth
		t.RegistryAuth = &a
	}
	if t.LastHealthCheck != nil {
		r := *t.LastHealthCheck
		t.LastHealthCheck = &r
	}
	if t.Pull != nil {
		p := *t.Pull
		t.Pull = &p
	}
	t.Events = slices.Clone(t.Events)
	return t
}

// Ports returns every container port the task publishes, sorted: the keys of ExposedPorts and of
// PortBindings.
func (t Task) Ports() []string {
	seen := make(map[string]bool, len(t.ExposedPorts)+len(t.PortBindings))
	for p := range t.ExposedPorts {
		seen[p] = true
	}
	for p := range t.PortBindings {
		seen[p] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// Event asks the worker to bring a task to a state: a new task ID starts the task, a known one
// with a new event ID restarts it. The JSON keys match the book's TaskEvent.
type Event struct {
	ID        uuid.UUID
	State     State
	Timestamp time.Time
	Task      Task
}

// OrderKind says what an Order asks for.
type OrderKind string

// The kinds of Order.
const (
	OrderStart  OrderKind = "start"  // start or restart the task from Event
	OrderStop   OrderKind = "stop"   // stop the task
	OrderRemove OrderKind = "remove" // stop the task, remove its container, forget it
)

// Order is a request the worker accepted and has not yet carried out. A durable store keeps it
// from the moment the API answers until it is applied, so that a crash in between loses nothing.
type Order struct {
	Seq    uint64 // the store's sequence number, growing in the order orders were accepted
	Kind   OrderKind
	TaskID uuid.UUID
	Event  *Event `json:",omitempty"` // OrderStart
}

// Change is one thing that happened to a task, as the worker's event stream tells it: a Record
// of the task, with the task's state after it. Seq grows by one per change within one run of a
// worker and never goes back, not even across a restart of the worker (a new run numbers on
// from above the last run's numbers).
//
// A Change of Type ChangeReset is no change to a task: it tells a subscriber that resumed after
// a Seq whose successors the worker no longer keeps (it restarted since, or they are too old)
// that it may have missed changes and must read the tasks again. Its Seq is the newest change's,
// to resume after.
type Change struct {
	Seq          uint64
	Time         time.Time
	TaskID       uuid.UUID
	Name         string
	Type         string // a Record type, or "State" for a change of state without a record
	Message      string `json:",omitempty"`
	State        State
	HealthStatus string `json:",omitempty"`
	RestartCount int
}

// ClearLiveFields applies the one rule for what a task reports about a container: HealthStatus,
// HostPorts and Paused describe a container that runs, so a task that is not Running (Completed,
// Failed, or Scheduled: not started yet, or waiting to restart) reports none of them. Its last check stays in
// LastHealthCheck and its history in Events.
//
// A paused container runs no code, so a Paused task reports no HealthStatus either.
func (t *Task) ClearLiveFields() {
	if t.State != Running {
		t.HealthStatus = ""
		t.HostPorts = nil
		t.Paused = false
	}
	if t.Paused {
		t.HealthStatus = ""
	}
}

// ChangeReset is the Type of a Change that says the changes a subscriber asked for are not all
// kept: it must read the tasks again.
const ChangeReset = "Reset"
