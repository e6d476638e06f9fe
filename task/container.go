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
	Running    bool
	ExitCode   int
	OOMKilled  bool
	Error      string // the runtime's own error for the container, if it gave one
	StartedAt  time.Time
	FinishedAt time.Time
	HostPorts  PortMap
}

// ContainerEventKind says what happened to a container.
type ContainerEventKind string

// The container events the worker reacts to.
const (
	ContainerStarted   ContainerEventKind = "start"
	ContainerDied      ContainerEventKind = "die"
	ContainerOOM       ContainerEventKind = "oom"
	ContainerDestroyed ContainerEventKind = "destroy"
)

// ContainerEvent is one event from the runtime's event stream about one of the worker's
// containers.
type ContainerEvent struct {
	Kind        ContainerEventKind
	ContainerID string
	TaskID      uuid.UUID
	Time        time.Time
	ExitCode    int // for ContainerDied
}
