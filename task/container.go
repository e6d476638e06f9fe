package task

import (
	"time"

	"github.com/google/uuid"
)

// LabelTaskID is the container label that ties a container to its task. Every container the
// worker creates carries it, and only containers that carry it are the worker's.
const LabelTaskID = "cube.task.id"

// Container is what a runtime reports about one of the worker's containers.
type Container struct {
	ID         string
	TaskID     uuid.UUID
	Running    bool // running, paused included
	Paused     bool // paused (docker pause): its processes are frozen
	Removing   bool // the runtime is removing it
	ExitCode   int
	OOMKilled  bool
	Error      string // the runtime's own error for the container, if it gave one
	StartedAt  time.Time
	FinishedAt time.Time
	HostPorts  PortMap
	IPAddress  string // the container's address on its network, where health checks reach it
	Health     string // the runtime's own health status (from an image's HEALTHCHECK), if any
	Created    time.Time
	EventID    string // the event whose start made the container (label LabelEventID)
	Worker     string // the worker that made it (the Docker adapter's label cube.worker), if known
	Spec       *Task  // the task as the container was made for it (label LabelSpec), if readable; Inspect fills it, List does not
	// SpecRead says that the container's spec label is readable and is its task's (Spec is
	// that label decoded, where it is filled), and SpecRestartCount is that spec's
	// RestartCount: which restart of the start EventID made the container. Inspect and List
	// fill both; List leaves Spec nil, since a reconcile lists every container and all it asks
	// of a spec is these two (a decoded spec is ~1 KB a container).
	SpecRead         bool
	SpecRestartCount int
}

// More container labels. LabelEventID ties a container to the start that made it, so that a
// start replayed after a crash finds its container instead of making a second one; LabelSpec
// holds the task's spec (never its credentials), so that a worker that lost its state can
// rebuild the task from the container alone.
const (
	LabelEventID = "cube.event.id"
	LabelSpec    = "cube.task.spec"
)

// StartStep is progress a runtime reports while it starts a task's container: a step done
// (Type is a Record type: Pulling, Pulled, Created, Started) or, with Pull set, pull progress.
type StartStep struct {
	Type    string
	Message string
	Pull    *PullProgress
}

// ContainerEventKind says what happened to a container.
type ContainerEventKind string

// The container events the worker reacts to.
const (
	ContainerStarted   ContainerEventKind = "start"
	ContainerDied      ContainerEventKind = "die"
	ContainerOOM       ContainerEventKind = "oom"
	ContainerDestroyed ContainerEventKind = "destroy"
	ContainerHealth    ContainerEventKind = "health_status"
	ContainerPaused    ContainerEventKind = "pause"
	ContainerUnpaused  ContainerEventKind = "unpause"
)

// ContainerEvent is one event from the runtime's event stream about one of the worker's
// containers.
type ContainerEvent struct {
	Kind        ContainerEventKind
	ContainerID string
	TaskID      uuid.UUID
	Time        time.Time
	ExitCode    int    // for ContainerDied
	Health      string // for ContainerHealth: "healthy", "unhealthy" or "starting"
}

// ShortID returns an ID as people read it: the first 12 characters of a container ID (as
// `docker ps` shows it), or the first block of a task or event UUID's text (8 hex digits, which
// tells tasks apart in practice and is what container names carry). An ID shorter than its
// short form is returned whole.
func ShortID(id string) string {
	n := 12
	if len(id) == 36 && id[8] == '-' { // a UUID's text
		n = 8
	}
	if len(id) > n {
		return id[:n]
	}
	return id
}
