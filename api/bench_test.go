package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
	"github.com/google/uuid"
)

// benchSpec is the task of the README's curl example.
func benchSpec() task.Task {
	id := uuid.New()
	return task.Task{
		ID:           id,
		Name:         "hello-" + id.String()[:8], // names of tasks that have not ended are unique
		State:        task.Scheduled,
		Image:        "cube-echo:latest",
		ExposedPorts: task.PortSet{"7777/tcp": {}},
		Env:          []string{"GREETING=hi"},
		Cmd:          []string{"--listen", ":7777"},
	}
}

// benchBody returns a POST /tasks body for a new task.
func benchBody(tb testing.TB) []byte {
	tb.Helper()
	t := benchSpec()
	type taskBody struct {
		ID string
		task.Task
	}
	body, err := json.Marshal(struct {
		ID        string
		State     task.State
		Timestamp string
		Task      taskBody
	}{uuid.NewString(), task.Scheduled, "", taskBody{t.ID.String(), t}})
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// benchServer is the API over a worker on the fake runtime, its loop running until the
// benchmark ends.
type benchServer struct {
	w    *worker.Worker
	h    http.Handler
	stop func()
}

func newBenchServer(tb testing.TB, tasks int) *benchServer {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	wh := testworker.Start(tb, testworker.Options{Config: worker.Config{Name: "bench", Logger: log, PingInterval: 2 * time.Second}})
	w := wh.Worker
	s := &benchServer{w: w, h: api.New(w, api.Options{Logger: log}), stop: wh.Stop}
	for range tasks {
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: benchSpec()}); err != nil {
			tb.Fatalf("Submit: got %v, want nil", err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		running := 0
		for _, t := range w.List() {
			if t.State == task.Running {
				running++
			}
		}
		if running == tasks {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("got %d tasks Running after a minute, want %d", running, tasks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// discardWriter is a ResponseWriter that keeps nothing but the status and the size, so that a
// benchmark measures the handler and not a recorder's buffer.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(status int) {
	if d.status == 0 {
		d.status = status
	}
}

func (d *discardWriter) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.n += len(p)
	return len(p), nil
}

func (d *discardWriter) reset() {
	clear(d.h)
	d.status, d.n = 0, 0
}

// BenchmarkListTasks is GET /tasks through the handler with 1,000 tasks (about 600 KB of JSON).
func BenchmarkListTasks(b *testing.B) {
	for _, n := range []int{0, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			s := newBenchServer(b, n)
			w := &discardWriter{h: http.Header{}}
			req := httptest.NewRequest(http.MethodGet, "/tasks", nil)
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				s.h.ServeHTTP(w, req)
				if w.status != http.StatusOK {
					b.Fatalf("GET /tasks: got %d, want 200", w.status)
				}
			}
			b.SetBytes(int64(w.n))
		})
	}
}

// BenchmarkGetTask is GET /tasks/{id} through the handler, what a client polling one task costs.
func BenchmarkGetTask(b *testing.B) {
	s := newBenchServer(b, 1000)
	id := s.w.List()[500].ID
	w := &discardWriter{h: http.Header{}}
	req := httptest.NewRequest(http.MethodGet, "/tasks/"+id.String(), nil)
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		s.h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("GET /tasks/{id}: got %d, want 200", w.status)
		}
	}
}

// BenchmarkSubmitTask is POST /tasks through the handler: decode, validate, store, queue, encode,
// with the worker loop applying the starts on the fake runtime meanwhile. Bodies are made and the
// worker is replaced every 5,000 requests outside the timer.
func BenchmarkSubmitTask(b *testing.B) {
	const chunk = 5000
	var (
		s      *benchServer
		bodies [][]byte
	)
	refill := func() {
		if s != nil {
			s.stop()
		}
		s = newBenchServer(b, 0)
		bodies = bodies[:0]
		for range chunk {
			bodies = append(bodies, benchBody(b))
		}
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	refill()
	i := 0
	for b.Loop() {
		if i == chunk {
			b.StopTimer()
			refill()
			i = 0
			b.StartTimer()
		}
		req := httptest.NewRequest(http.MethodPost, "/tasks", bytes.NewReader(bodies[i]))
		i++
		w.reset()
		s.h.ServeHTTP(w, req)
		if w.status != http.StatusCreated {
			b.Fatalf("POST /tasks: got %d, want 201", w.status)
		}
	}
}

// BenchmarkEncodeTasks is the bare JSON work of GET /tasks: encoding a list of tasks as the
// worker holds them once they run.
func BenchmarkEncodeTasks(b *testing.B) {
	for _, n := range []int{1, 1000, 10000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			s := newBenchServer(b, n)
			list := s.w.List()
			var size int
			b.ReportAllocs()
			for b.Loop() {
				cw := &countWriter{}
				if err := json.NewEncoder(cw).Encode(list); err != nil {
					b.Fatal(err)
				}
				size = cw.n
			}
			b.SetBytes(int64(size))
		})
	}
}

type countWriter struct{ n int }

func (c *countWriter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

// BenchmarkDecodeEvent is the bare JSON work of POST /tasks: decoding the event body as the
// handler does (unknown fields rejected) into the same shape.
func BenchmarkDecodeEvent(b *testing.B) {
	body := benchBody(b)
	type taskReq struct {
		ID string
		task.Task
	}
	type eventReq struct {
		ID        string
		State     task.State
		Timestamp string
		Task      taskReq
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var ev eventReq
		if err := dec.Decode(&ev); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, dec.Buffered()); err != nil {
			b.Fatal(err)
		}
	}
}
