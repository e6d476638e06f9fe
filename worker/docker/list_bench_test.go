package docker_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// BenchmarkList is the reconcile's list on the real Engine: CUBE_BENCH_CONTAINERS (default 200)
// containers of one worker, created as Start creates them (each with its ~1.5 KB spec label) but
// not started, listed once per op after a first List has cached their specs, as a reconcile
// finds them. B/op is what one reconcile's list allocates; -memprofile says where. It is not part
// of make bench: it makes containers.
//
//	go test -run '^$' -bench 'BenchmarkList$' -benchmem ./worker/docker/
func BenchmarkList(b *testing.B) {
	n := envInt(b, "CUBE_BENCH_CONTAINERS", 200)
	testenv.BuildEchoImage(b)
	name := "cube-bench-list-" + uuid.NewString()[:8]
	rt, err := docker.New(docker.Options{Worker: name, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	b.Cleanup(func() { testenv.RemoveLabelled(b, docker.LabelWorker+"="+name) })
	ctx := testenv.Ctx(b, 30*time.Minute)
	for range n {
		tk := benchTask()
		if _, err := rt.Create(ctx, tk); err != nil {
			b.Fatal(err)
		}
	}
	list, err := rt.List(ctx)
	if err != nil || len(list) != n {
		b.Fatalf("List: got %d containers, %v; want %d", len(list), err, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		list, err := rt.List(ctx)
		if err != nil || len(list) != n {
			b.Fatalf("List: got %d containers, %v; want %d", len(list), err, n)
		}
	}
}

// benchTask is an echo task with a spec label as long as the scale run's (~1.5 KB).
func benchTask() task.Task {
	tk := echoTask("--listen", ":7777")
	tk.ExposedPorts = task.PortSet{"7777/tcp": {}}
	tk.Env = []string{"GREETING=hello from a task whose spec label is about as long as a real one's"}
	tk.LastEvent = uuid.NewString()
	return tk
}
