package worker

import (
	"context"
	"time"

	"github.com/cube-orchestrator/cube/task"
)

// pauseChanged records that the task's container was paused or unpaused outside cube (docker
// pause). A paused container runs no code: the task stays Running, with Paused set and a Paused
// record, and reports no health; its health check is suspended, so that a frozen container is
// neither healthy nor killed for failing checks. When it is unpaused the check starts over, from
// starting. Nothing is restarted either way.
func (r *runner) pauseChanged(ctx context.Context, containerID string, paused bool) error {
	w := r.w
	t, _ := w.store.Get(r.id)
	if t.ContainerID != containerID || t.State != task.Running || t.Paused == paused {
		return nil
	}
	if paused {
		r.cancelProbe()
		_, err := r.modify(func(t *task.Task) error {
			t.Paused = true
			t.AddRecord(w.now(), task.RecordPaused, "container %s paused outside cube; health checks suspended", task.ShortID(containerID))
			return nil
		})
		if err == nil {
			r.log.Warn("task's container was paused outside cube; it runs no code until it is unpaused", "container", task.ShortID(containerID))
		}
		return err
	}
	// Its address and the runtime's own health status, afresh; without them the check runs
	// against what was known before the pause.
	c := task.Container{ID: containerID, IPAddress: r.ip, HostPorts: t.HostPorts}
	ictx, cancel := bounded(ctx, 30*time.Second)
	if got, err := w.rt.Inspect(ictx, containerID); err == nil {
		c = got
	}
	cancel()
	t, err := r.modify(func(t *task.Task) error {
		t.Paused = false
		t.HealthStatus = c.Health
		if hasOwnCheck(*t) {
			t.HealthStatus = task.HealthStarting
		}
		t.AddRecord(w.now(), task.RecordUnpaused, "container %s unpaused", task.ShortID(containerID))
		return nil
	})
	if err != nil {
		return err
	}
	r.watchHealth(ctx, t, c)
	r.log.Info("task's container was unpaused", "container", task.ShortID(containerID))
	return nil
}
