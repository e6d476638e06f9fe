package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// apiPhase measures the API in this process: cube's handler (api.New over a worker whose runtime
// is the in-memory fake, so that no container is involved) and a bare net/http handler doing the
// same JSON work, each served on a loopback listener and loaded by the same clients.
func (b *bench) apiPhase(ctx context.Context) error {
	o := b.opts
	// The daemon's logger: text at level info. Only the write is saved, into io.Discard.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// MaxTasks is lifted: the POST load adds tens of thousands of tasks that never end, and
	// what is measured is the POST path, not the worker's limit.
	w := worker.New(workertest.New(), worker.Config{Name: "cube-bench-api", Logger: log, MaxTasks: 1 << 20})
	wctx, stopWorker := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(wctx) }()
	defer func() {
		stopWorker()
		<-runDone
	}()

	for range o.apiTasks {
		id := uuid.New()
		t := task.Task{
			ID: id, Name: "bench-api-" + id.String()[:8], State: task.Scheduled, Image: o.image, // names of tasks that have not ended are unique
			ExposedPorts: task.PortSet{"7777/tcp": {}}, Cmd: []string{"--listen", ":7777"},
		}
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Scheduled, Task: t}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := 0
		for _, t := range w.List() {
			if t.State == task.Running {
				running++
			}
		}
		if running == o.apiTasks {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d fake tasks Running after 30s", running, o.apiTasks)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	list := w.List()
	bodySize, err := json.Marshal(list)
	if err != nil {
		return err
	}

	cubeURL, closeCube, err := serve(api.New(w, api.Options{Logger: log}))
	if err != nil {
		return err
	}
	defer closeCube()
	bareURL, closeBare, err := serve(bareHandler(list))
	if err != nil {
		return err
	}
	defer closeBare()

	get := func(url string) func() (*http.Request, error) {
		return func() (*http.Request, error) { return http.NewRequest(http.MethodGet, url+"/tasks", nil) }
	}
	post := func(url string) func() (*http.Request, error) {
		spec := b.echoSpec("bench-api", "--listen", ":7777")
		return func() (*http.Request, error) {
			body, _ := eventBody(spec)
			return http.NewRequest(http.MethodPost, url+"/tasks", bytes.NewReader(body))
		}
	}
	res := &APIResult{
		Clients: o.apiClients, Seconds: o.apiDuration.Seconds(), Tasks: len(list), BodySize: len(bodySize) + 1,
		Process: fmt.Sprintf("clients and servers share this process's %d CPUs", runtime.NumCPU()),
		Note: "cube: api.New over worker.New(workertest.New()) with MaxTasks lifted, logging text at level info to io.Discard; " +
			"bare: http.ServeMux, GET encodes the same []task.Task, POST decodes the event (unknown fields rejected, 1 MiB limit) and encodes the task",
	}
	// GET first: every POST adds a task to cube's store.
	steps := []struct {
		l    *Load
		req  func() (*http.Request, error)
		want int
	}{
		{&res.List.Cube, get(cubeURL), http.StatusOK},
		{&res.List.Bare, get(bareURL), http.StatusOK},
		{&res.Submit.Bare, post(bareURL), http.StatusCreated},
		{&res.Submit.Cube, post(cubeURL), http.StatusCreated},
	}
	for _, s := range steps {
		l, err := load(ctx, o.apiClients, o.apiDuration, s.req, s.want)
		if err != nil {
			return err
		}
		*s.l = l
	}
	res.List.RPSRatio = ratio(res.List.Cube.RPS, res.List.Bare.RPS)
	res.Submit.RPSRatio = ratio(res.Submit.Cube.RPS, res.Submit.Bare.RPS)
	b.res.API = res
	return nil
}

// serve serves h on a loopback listener and returns its URL and a function that shuts it down.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// bareEvent and bareTask have the shape of the API's request body, as cube's own request types
// do: the UUIDs arrive as strings.
type bareEvent struct {
	ID        string
	State     task.State
	Timestamp string
	Task      bareTask
}

type bareTask struct {
	ID string
	task.Task
}

// bareHandler does the JSON work of GET /tasks and POST /tasks with nothing around it: no
// router beyond http.ServeMux, no middleware, no store, no validation.
func bareHandler(list []task.Task) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("POST /tasks", func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
		dec.DisallowUnknownFields()
		var ev bareEvent
		if err := dec.Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := uuid.Parse(ev.Task.ID)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := ev.Task.Task
		t.ID = id
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(t)
	})
	return mux
}

// bareAppendHandler writes GET /tasks as bareHandler does, one buffer for the whole list
// written at once, with task.AppendJSON instead of encoding/json: the same bytes.
func bareAppendHandler(list []task.Task) http.Handler {
	var bufs sync.Pool // of *[]byte, as encoding/json pools its buffers
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, r *http.Request) {
		p, _ := bufs.Get().(*[]byte)
		if p == nil {
			p = new([]byte)
		}
		defer bufs.Put(p)
		b := append((*p)[:0], '[')
		for i := range list {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = task.AppendJSON(b, &list[i]); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		b = append(b, "]\n"...)
		if list == nil {
			b = append(b[:0], "null\n"...)
		}
		*p = b
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	})
	return mux
}

// load sends requests from clients goroutines, each waiting for its answer before sending the
// next, for d after a short warm-up, and returns the rate and the latencies.
func load(ctx context.Context, clients int, d time.Duration, newReq func() (*http.Request, error), want int) (Load, error) {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	one := func() error {
		req, err := newReq()
		if err != nil {
			return err
		}
		resp, err := hc.Do(req.WithContext(ctx))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != want {
			return fmt.Errorf("%s %s: got %d, want %d", req.Method, req.URL.Path, resp.StatusCode, want)
		}
		return nil
	}
	runFor := func(d time.Duration) (lat []time.Duration, errs int, firstErr error, el time.Duration) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		end := start.Add(d)
		for range clients {
			wg.Go(func() {
				var mine []time.Duration
				bad := 0
				var first error
				for time.Now().Before(end) && ctx.Err() == nil {
					t := time.Now()
					if err := one(); err != nil {
						bad++
						if first == nil {
							first = err
						}
						continue
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				lat = append(lat, mine...)
				errs += bad
				if firstErr == nil {
					firstErr = first
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		return lat, errs, firstErr, time.Since(start)
	}
	runFor(min(d/4, 500*time.Millisecond)) // warm-up: connections, caches, the heap
	lat, errs, firstErr, el := runFor(d)
	if err := ctx.Err(); err != nil {
		return Load{}, err
	}
	if len(lat) == 0 {
		return Load{}, errors.Join(errors.New("no request succeeded"), firstErr)
	}
	l := Load{RPS: float64(int(float64(len(lat)) / el.Seconds())), Latency: distOf(lat), Errors: errs}
	if firstErr != nil {
		l.FirstError = firstErr.Error()
	}
	return l, nil
}
