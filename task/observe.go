package task

import (
	"time"

	"github.com/google/uuid"
)

// LogOptions says which of a container's output a runtime returns. The zero value asks for all
// of it, without timestamps, once.
type LogOptions struct {
	// Follow keeps the output coming as the container prints it, until the container ends or
	// the caller's context is done.
	Follow bool
	// Tail, when positive, keeps only the last Tail lines of the earlier output; negative keeps
	// none of it (with Follow: only new output); zero keeps every line.
	Tail int
	// Since, when set, keeps only output printed at or after it.
	Since time.Time
	// Timestamps prefixes each line with the time it was printed, in RFC 3339 with nanoseconds,
	// and a space.
	Timestamps bool
}

// ContainerStats is one sample of a task's container's resource use, as the worker reports it.
// The JSON keys are the field names; the API's TaskStats schema names each of them.
type ContainerStats struct {
	TaskID      uuid.UUID // set by the worker; a runtime leaves it zero
	ContainerID string
	Time        time.Time // when the runtime read the sample
	CPUPercent  float64   // CPU use over the runtime's sampling interval, in % of one core (150: 1.5 cores)
	MemoryUsage int64     // bytes in use, page cache not counted
	MemoryLimit int64     // bytes the container may use: its limit, or the machine's memory
	NetworkRx   int64     // bytes received, all interfaces
	NetworkTx   int64     // bytes sent, all interfaces
	BlockRead   int64     // bytes read from block devices
	BlockWrite  int64     // bytes written to block devices
	PIDs        int64     // processes and threads in the container
}
