package docker_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/google/uuid"
)

// BenchmarkExitsAtOnce is issue 15's exit figure on the real Engine, with the worker's state on
// disk (bbolt, fsync on every commit, the default): CUBE_BENCH_EXITING (default 20) of
// CUBE_BENCH_RUNNING (default 40) running tasks are sent SIGTERM at once (the echo exits 0), and
// each exit's latency is measured from its container's die event (the Engine's time) to the
// worker's change saying the task ended (Completed), which comes right after the store has the
// exit on disk and GET /tasks/{id} shows it. The reference is a bare SDK subscriber to the same
// Engine's events in the same run: die event to its arrival there, what any watcher pays; the
// third figure, from that arrival to the worker's change, is the worker's own share. Each op is
// one round of exits; the exited tasks are replaced, outside the timer, before the next. It is
// not part of make bench: it runs containers.
//
//	go test -run '^$' -bench ExitsAtOnce -benchtime 5x ./worker/docker/
func BenchmarkExitsAtOnce(b *testing.B) {
	running, exiting := envInt(b, "CUBE_BENCH_RUNNING", 40), envInt(b, "CUBE_BENCH_EXITING", 20)
	if exiting > running {
		b.Fatalf("CUBE_BENCH_EXITING %d > CUBE_BENCH_RUNNING %d", exiting, running)
	}
	testenv.BuildEchoImage(b)
	name := "cube-bench-exits-" + uuid.NewString()[:8]
	log := slog.New(slog.DiscardHandler)
	rt, err := docker.New(docker.Options{Worker: name, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	b.Cleanup(func() { testenv.RemoveLabelled(b, docker.LabelWorker+"="+name) }) // after the worker stops
	store, err := boltstore.OpenDir(b.TempDir(), boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	w := worker.New(rt, worker.Config{Name: name, Logger: log, Store: store, Concurrency: 8})
	workertest.Start(b, w, 30*time.Second)

	// The reference: the Engine's die events as a bare SDK subscriber receives them.
	cli := testenv.Docker(b)
	ectx, stopEvents := context.WithCancel(context.Background())
	type death struct{ engine, received time.Time }
	var (
		mu   sync.Mutex
		died = map[string]death{} // container → its die event
		cond = sync.NewCond(&mu)
	)
	msgs, errs := cli.Events(ectx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("event", "die"), filters.Arg("label", docker.LabelWorker+"="+name))})
	var ewg sync.WaitGroup
	ewg.Go(func() {
		for {
			select {
			case m := <-msgs:
				now := time.Now()
				mu.Lock()
				died[m.Actor.ID] = death{engine: time.Unix(0, m.TimeNano), received: now}
				cond.Broadcast()
				mu.Unlock()
			case <-errs:
				return
			}
		}
	})
	b.Cleanup(func() { stopEvents(); ewg.Wait() })

	ids := make([]uuid.UUID, 0, running)
	ids = append(ids, startEchoes(b, w, running)...)
	// cube: die event to Completed; raw: die event to the bare subscriber; added: the bare
	// subscriber's arrival to Completed, the worker's own share; spread: first die to last die
	// of a round, by the Engine's clock.
	var cube, raw, added, spread []time.Duration
	b.ResetTimer()
	for range b.N {
		round := ids[:exiting]
		containers := make(map[string]uuid.UUID, exiting)
		for _, id := range round {
			t, err := w.Get(id)
			if err != nil || t.State != task.Running {
				b.Fatalf("task %s: got %v, %v, want Running", id, t.State, err)
			}
			containers[t.ContainerID] = id
		}
		_, changes, stop := w.Changes(w.LastChange())
		completed := map[uuid.UUID]time.Time{}
		var kill sync.WaitGroup
		for c := range containers {
			kill.Go(func() {
				if err := cli.ContainerKill(context.Background(), c, "SIGTERM"); err != nil {
					b.Errorf("kill %s: %v", c, err)
				}
			})
		}
		deadline := time.After(time.Minute)
		for len(completed) < exiting {
			select {
			case c, ok := <-changes:
				if !ok {
					b.Fatal("the change stream fell behind")
				}
				// Ended, not only Completed: an echo signalled before it has set up its handler
				// exits 143, and its task ends Failed.
				if c.State.Ended() && slices.Contains(round, c.TaskID) {
					if _, seen := completed[c.TaskID]; !seen {
						completed[c.TaskID] = time.Now()
					}
				}
			case <-deadline:
				b.Fatalf("%d of %d exits seen ended within a minute", len(completed), exiting)
			}
		}
		stop()
		kill.Wait()
		mu.Lock()
		var first, last time.Time
		for c := range containers {
			for died[c].engine.IsZero() {
				cond.Wait()
			}
			if e := died[c].engine; first.IsZero() || e.Before(first) {
				first = e
			}
			if e := died[c].engine; e.After(last) {
				last = e
			}
		}
		spread = append(spread, last.Sub(first))
		for c, id := range containers {
			for died[c].engine.IsZero() {
				cond.Wait()
			}
			d := died[c]
			cube = append(cube, completed[id].Sub(d.engine))
			raw = append(raw, d.received.Sub(d.engine))
			added = append(added, completed[id].Sub(d.received))
		}
		mu.Unlock()
		b.StopTimer()
		ids = append(ids[exiting:], startEchoes(b, w, exiting)...)
		b.StartTimer()
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		lat  []time.Duration
	}{{"cube", cube}, {"raw", raw}, {"added", added}} {
		slices.Sort(m.lat)
		for _, p := range []int{50, 90, 99} {
			b.ReportMetric(ms(percentile(m.lat, p)), m.name+"-p"+strconv.Itoa(p)+"-ms")
		}
	}
	b.Logf("%d exits at once of %d running, %d rounds: die event → Completed p50 %.2f p90 %.2f p99 %.2f max %.2f ms; "+
		"die event → bare SDK subscriber p50 %.2f p90 %.2f p99 %.2f ms; bare subscriber → Completed p50 %.2f p90 %.2f p99 %.2f ms",
		exiting, running, b.N, ms(percentile(cube, 50)), ms(percentile(cube, 90)), ms(percentile(cube, 99)), ms(cube[len(cube)-1]),
		ms(percentile(raw, 50)), ms(percentile(raw, 90)), ms(percentile(raw, 99)),
		ms(percentile(added, 50)), ms(percentile(added, 90)), ms(percentile(added, 99)))
	b.Logf("die events of a round spread over (first to last, the Engine's clock): %v", spread)
}

// startEchoes submits n echo tasks to w and waits until all are Running.
func startEchoes(b *testing.B, w *worker.Worker, n int) []uuid.UUID {
	b.Helper()
	_, changes, stop := w.Changes(w.LastChange())
	defer stop()
	ids := make(map[uuid.UUID]bool, n)
	out := make([]uuid.UUID, 0, n)
	for range n {
		id := uuid.New()
		t := task.Task{ID: id, Name: "exit-" + id.String()[:8], State: task.Scheduled, Image: testenv.EchoImage}
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			b.Fatal(err)
		}
		ids[id] = true
		out = append(out, id)
	}
	deadline := time.After(2 * time.Minute)
	for len(ids) > 0 {
		select {
		case c, ok := <-changes:
			if !ok {
				b.Fatal("the change stream fell behind")
			}
			if c.State == task.Running {
				delete(ids, c.TaskID)
			}
		case <-deadline:
			b.Fatalf("%d of %d tasks not Running after 2m", len(ids), n)
		}
	}
	return out
}

func envInt(b *testing.B, key string, def int) int {
	b.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
