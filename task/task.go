package task

import (
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
	Error    string // why the task failed; empty otherwise
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
