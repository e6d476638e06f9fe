package worker

import (
	"context"
	"io"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// statsTimeout bounds one stats sample; the Docker adapter's own bound is shorter.
const statsTimeout = time.Minute

// Logs returns the output of the task's container as opts says, to be read to the end and
// closed. It works for a task that has ended, as long as its container exists. It fails with
// ENOTFOUND for an unknown task, ECONFLICT when the task has no container (not started yet, or
// removed), and EUNAVAILABLE when the runtime does not answer.
func (w *Worker) Logs(ctx context.Context, id uuid.UUID, opts task.LogOptions) (io.ReadCloser, error) {
	t, err := w.Get(id) // a task being removed is not found
	if err != nil {
		return nil, err
	}
	if t.ContainerID == "" {
		return nil, noContainer(t)
	}
	rc, err := w.rt.Logs(ctx, t.ContainerID, opts)
	if task.ErrorCode(err) == task.ENOTFOUND {
		return nil, task.Errorf(task.ECONFLICT, "task %s has no container: container %s was removed", id, task.ShortID(t.ContainerID))
	}
	if err != nil {
		return nil, err
	}
	return rc, nil
}

// TaskStats returns one sample of the resource use of the task's container. It fails with
// ENOTFOUND for an unknown task, ECONFLICT when the task is not running, and EUNAVAILABLE when
// the runtime does not answer.
func (w *Worker) TaskStats(ctx context.Context, id uuid.UUID) (task.ContainerStats, error) {
	t, err := w.Get(id) // a task being removed is not found
	if err != nil {
		return task.ContainerStats{}, err
	}
	if t.State != task.Running || t.ContainerID == "" {
		return task.ContainerStats{}, task.Errorf(task.ECONFLICT, "task %s is not running: it is %v", id, t.State)
	}
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	s, err := w.rt.Stats(ctx, t.ContainerID)
	if task.ErrorCode(err) == task.ENOTFOUND {
		return task.ContainerStats{}, task.Errorf(task.ECONFLICT, "task %s is not running: container %s is gone", id, task.ShortID(t.ContainerID))
	}
	if err != nil {
		return task.ContainerStats{}, err
	}
	s.TaskID = id
	if s.ContainerID == "" {
		s.ContainerID = t.ContainerID
	}
	return s, nil
}

// noContainer is the error for output asked of a task that has no container.
func noContainer(t task.Task) error {
	switch t.State {
	case task.Pending, task.Scheduled:
		return task.Errorf(task.ECONFLICT, "task %s has no container yet: it is %v", t.ID, t.State)
	}
	return task.Errorf(task.ECONFLICT, "task %s has no container: it is %v and its container was removed", t.ID, t.State)
}
