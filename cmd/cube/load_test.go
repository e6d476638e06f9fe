package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

const (
	loadClients   = 200 // concurrent clients
	loadMaxAlive  = 60  // tasks not yet deleted at once, so that the machine copes
	loadThinkTime = 20 * time.Millisecond
)

// loadDuration is how long the load lasts: CUBE_LOAD_DURATION, default 60s.
func loadDuration(t *testing.T) time.Duration {
	s := os.Getenv("CUBE_LOAD_DURATION")
	if s == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("CUBE_LOAD_DURATION=%q: want a duration such as 60s", s)
	}
	return d
}

// loadStats counts what the clients saw.
type loadStats struct {
	mu       sync.Mutex
	byRoute  map[string]map[int]int // "POST /tasks" → status → count
	failures []string               // 5xx answers, transport errors, unexpected statuses
	accepted map[uuid.UUID]bool     // tasks the worker accepted (201)
	latency  []time.Duration
	requests atomic.Int64
}

func (s *loadStats) record(route string, status int, d time.Duration) {
	s.requests.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byRoute[route] == nil {
		s.byRoute[route] = map[int]int{}
	}
	s.byRoute[route][status]++
	s.latency = append(s.latency, d)
}

func (s *loadStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 50 {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

// TestLoad drives the in-process daemon, with tokens, against the real Docker Engine: 200
// clients mixing POST, GET of one task and of its logs, GET of the list, GET /stats and DELETE for
// CUBE_LOAD_DURATION, with at most 60 tasks undeleted at once. Then every task is deleted. It
// wants no 5xx and no transport error, every accepted task listed and ended, no container left,
// and the process's goroutines and heap back near where they started.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("the load test takes a minute; not with -short")
	}
	duration := loadDuration(t)
	ignore := goleak.IgnoreCurrent()
	dir := t.TempDir()
	// Retention would remove ended tasks beyond --keep-ended during the load; here every accepted
	// task must still be listed at the end (retention has tests of its own, in gc_test.go).
	d := startDaemon(t, "--log-level", "info", "--keep-ended", "1000000",
		"--token-file", writeFile(t, dir, "token", testToken, 0o600),
		"--read-token-file", writeFile(t, dir, "read", testReadToken, 0o600))
	d.token = testToken

	tr := &http.Transport{MaxIdleConns: loadClients, MaxIdleConnsPerHost: loadClients, IdleConnTimeout: 30 * time.Second}
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	send := func(method, path, token string, body []byte) (int, []byte, error) {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, d.url+path, r)
		if err != nil {
			return 0, nil, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	// The baseline: the daemon up and warm, its first answers given.
	for range 3 {
		send("GET", "/tasks", testToken, nil)
		send("GET", "/stats", testToken, nil)
	}
	tr.CloseIdleConnections()
	goroutinesBefore, heapBefore := settledGoroutines(0, 0), heapAlloc()

	st := &loadStats{byRoute: map[string]map[int]int{}, accepted: map[uuid.UUID]bool{}}
	slots := make(chan struct{}, loadMaxAlive) // a token per task not yet seen ended after its DELETE
	var maxContainers atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup

	// Count the containers now and then.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := int64(len(testenv.Containers(t, docker.LabelWorker+"="+d.name)))
				if n > maxContainers.Load() {
					maxContainers.Store(n)
				}
			}
		}
	}()

	start := time.Now()
	for i := range loadClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loadClient(i, st, slots, stop, send)
		}()
	}
	time.Sleep(duration)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	// Delete every task and wait for each to end without a container.
	var list []task.Task
	code, body, err := send("GET", "/tasks", testToken, nil)
	if err != nil || code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /tasks after the load: %d %v", code, err)
	}
	listed := map[uuid.UUID]bool{}
	for _, tk := range list {
		listed[tk.ID] = true
	}
	for id := range st.accepted {
		if !listed[id] {
			t.Errorf("accepted task %s is not listed", id)
		}
	}
	var dwg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, tk := range list {
		if tk.State == task.Completed && tk.ContainerID == "" {
			continue
		}
		dwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer dwg.Done()
			defer func() { <-sem }()
			if code, body, err := send("DELETE", "/tasks/"+tk.ID.String(), testToken, nil); err != nil || code != 204 {
				st.fail("final DELETE %s: %d %s %v", tk.ID, code, body, err)
			}
		}()
	}
	dwg.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, body, err := send("GET", "/tasks", testToken, nil)
		if err != nil || code != 200 || json.Unmarshal(body, &list) != nil {
			t.Fatalf("GET /tasks while draining: %d %v", code, err)
		}
		var pending []string
		for _, tk := range list {
			if (tk.State != task.Completed && tk.State != task.Failed) || tk.ContainerID != "" {
				pending = append(pending, fmt.Sprintf("%s %v container %.12s", tk.ID, tk.State, tk.ContainerID))
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks not ended 2m after their DELETE, for example %v", len(pending), pending[:min(5, len(pending))])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if left := testenv.Containers(t, docker.LabelWorker+"="+d.name); len(left) != 0 {
		t.Errorf("containers left after deleting every task: got %d, want 0", len(left))
	}

	tr.CloseIdleConnections()
	goroutinesAfter := settledGoroutines(goroutinesBefore+10, 30*time.Second)
	heapAfter := heapAlloc()

	// The figures.
	st.mu.Lock()
	sort.Slice(st.latency, func(i, j int) bool { return st.latency[i] < st.latency[j] })
	pct := func(p float64) time.Duration { return st.latency[int(p*float64(len(st.latency)-1))] }
	var routes []string
	for r, codes := range st.byRoute {
		routes = append(routes, fmt.Sprintf("%s %v", r, codes))
	}
	sort.Strings(routes)
	t.Logf("load: %d clients for %v: %d requests (%.0f/s), latency p50 %v p90 %v p99 %v max %v",
		loadClients, elapsed.Round(time.Second), st.requests.Load(), float64(st.requests.Load())/elapsed.Seconds(),
		pct(0.5), pct(0.9), pct(0.99), st.latency[len(st.latency)-1])
	t.Logf("load: statuses by route: %s", strings.Join(routes, "; "))
	t.Logf("load: %d tasks accepted and ended, at most %d containers at once (limit %d undeleted tasks)",
		len(st.accepted), maxContainers.Load(), loadMaxAlive)
	t.Logf("load: goroutines %d before, %d after; heap %.1f MiB before, %.1f MiB after (%d tasks tracked)",
		goroutinesBefore, goroutinesAfter, mib(heapBefore), mib(heapAfter), len(list))
	for _, f := range st.failures {
		t.Errorf("load: %s", f)
	}
	st.mu.Unlock()

	if len(st.accepted) == 0 {
		t.Error("no task was accepted")
	}
	if n := maxContainers.Load(); n > loadMaxAlive+10 {
		t.Errorf("containers at once: got %d, want at most about %d", n, loadMaxAlive)
	}
	if goroutinesAfter > goroutinesBefore+10 {
		t.Errorf("goroutines: %d before the load, %d after it settled; want back near the start", goroutinesBefore, goroutinesAfter)
	}
	// The worker keeps every task it was given (ended ones until its cap), so the heap may grow by
	// what those records take, and not by much more.
	if limit := heapBefore + 16<<20 + uint64(len(list))*16<<10; heapAfter > limit {
		t.Errorf("heap: %.1f MiB before, %.1f MiB after; want at most %.1f MiB with %d tasks tracked",
			mib(heapBefore), mib(heapAfter), mib(limit), len(list))
	}

	d.stop(t)
	goleak.VerifyNone(t, ignore,
		// The test's own Docker client keeps its connections.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"))
}

// loadClient is one client: until stop, it picks an action, does it, checks the answer, and
// thinks a little.
func loadClient(i int, st *loadStats, slots chan struct{}, stop chan struct{}, send func(method, path, token string, body []byte) (int, []byte, error)) {
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	var live, deleting []uuid.UUID // tasks of this client, not deleted; deleted, not yet seen ended
	do := func(method, path, token string, body []byte, want ...int) (int, []byte) {
		route := method + " " + path
		switch {
		case strings.HasPrefix(path, "/tasks/") && strings.Contains(path, "/logs"):
			route = method + " /tasks/{id}/logs"
		case strings.HasPrefix(path, "/tasks/"):
			route = method + " /tasks/{id}"
		}
		start := time.Now()
		code, b, err := send(method, path, token, body)
		st.record(route, code, time.Since(start))
		switch {
		case err != nil:
			st.fail("%s %s: %v", method, path, err)
		case code >= 500:
			st.fail("%s %s: %d %s", method, path, code, b)
		default:
			for _, w := range want {
				if code == w {
					return code, b
				}
			}
			st.fail("%s %s: got %d %s, want %v", method, path, code, b, want)
		}
		return code, b
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		switch r := rng.IntN(100); {
		case r < 25: // POST, when a slot is free; else look for a task that does not exist
			select {
			case slots <- struct{}{}:
				tk := echoTask("--listen", ":7777")
				tk.Name = fmt.Sprintf("load-%d-%s", i, tk.ID.String()[:8]) // names of tasks that have not ended are unique
				body, _ := json.Marshal(task.Event{ID: uuid.New(), State: task.Running, Timestamp: time.Now(), Task: tk})
				if code, _ := do("POST", "/tasks", testToken, body, 201); code == 201 {
					st.mu.Lock()
					st.accepted[tk.ID] = true
					st.mu.Unlock()
					live = append(live, tk.ID)
				} else {
					<-slots
				}
			default:
				do("GET", "/tasks/"+uuid.NewString(), testReadToken, nil, 404)
			}
		case r < 60: // GET one of its tasks; a deleted one that has ended frees its slot
			if len(deleting) > 0 && rng.IntN(2) == 0 {
				id := deleting[0]
				_, b := do("GET", "/tasks/"+id.String(), testReadToken, nil, 200)
				var got task.Task
				if json.Unmarshal(b, &got) == nil && (got.State == task.Completed || got.State == task.Failed) && got.ContainerID == "" {
					deleting = deleting[1:]
					<-slots
				}
			} else if len(live) > 0 {
				do("GET", "/tasks/"+live[rng.IntN(len(live))].String(), testToken, nil, 200)
			} else {
				do("GET", "/healthz", "", nil, 200)
			}
		case r < 63: // the whole list
			do("GET", "/tasks", testReadToken, nil, 200)
		case r < 75:
			do("GET", "/stats", testReadToken, nil, 200)
		case r < 77: // a wrong token
			do("GET", "/tasks", "not-the-token-0123456789", nil, 401)
		case r < 82: // the last lines of one of its tasks; 409 while it has no container yet
			if len(live) == 0 {
				do("GET", "/tasks/"+uuid.NewString()+"/logs", testReadToken, nil, 404)
				break
			}
			do("GET", "/tasks/"+live[rng.IntN(len(live))].String()+"/logs?tail=5&timestamps=true", testReadToken, nil, 200, 409)
		default: // DELETE one of its tasks
			if len(live) == 0 {
				do("GET", "/readyz", testReadToken, nil, 200)
				break
			}
			k := rng.IntN(len(live))
			id := live[k]
			if code, _ := do("DELETE", "/tasks/"+id.String(), testToken, nil, 204); code == 204 {
				live = append(live[:k], live[k+1:]...)
				deleting = append(deleting, id)
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(loadThinkTime))))
	}
}

// settledGoroutines waits up to within for the number of goroutines to fall to at most want,
// and returns it; with within 0 it waits for the count to stop changing for a moment.
func settledGoroutines(want int, within time.Duration) int {
	if within == 0 {
		n := runtime.NumGoroutine()
		for range 20 {
			time.Sleep(50 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m == n {
				return n
			}
			n = m
		}
		return n
	}
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
