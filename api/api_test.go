package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/metrics"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/cube-orchestrator/cube/worker/workertest/testworker"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 5 * time.Second

// taskKeys are the JSON keys of a task: those of the book's Task, then cube's own.
var taskKeys = []string{
	"ID", "ContainerID", "Name", "State", "Image", "Cpu", "Memory", "Disk", "ExposedPorts",
	"PortBindings", "RestartPolicy", "StartTime", "FinishTime", "HostPorts", "HealthCheck",
	"RestartCount", "Env", "Cmd", "ExitCode", "Error",
}

// optionalKeys are cube's own task keys, left out when empty. Anything else is a mistake.
var optionalKeys = []string{
	"Restart", "Health", "PullPolicy", "MemoryReservation", "PidsLimit", "StopTimeout", "StopSignal",
	"Privileged", "NetworkMode", "PidMode", "CapAdd", "Devices", "Binds",
	"HealthStatus", "LastHealthCheck", "Pull", "LastEvent", "Unconfirmed", "Events",
}

func testLogger(tb testing.TB) *slog.Logger { return testworker.Logger(tb) }

// harness is the API over a running worker on a fake runtime.
type harness struct {
	rt   *workertest.Runtime
	w    *worker.Worker
	h    http.Handler
	auth string // the Authorization header the harness's own reads (waitState) send, if any
}

// newHarness starts a worker on a fake runtime, waits until it is ready, and serves it, with its
// metrics; the worker stops when the test ends.
func newHarness(tb testing.TB) *harness {
	tb.Helper()
	return newHarnessWith(tb, testworker.Options{})
}

// newHarnessWith is newHarness with the worker's options.
func newHarnessWith(tb testing.TB, opts testworker.Options) *harness {
	tb.Helper()
	wh := testworker.Start(tb, opts)
	m := metrics.New(metrics.Options{Logger: wh.Logger})
	m.Track(wh.Worker)
	return &harness{rt: wh.Fake, w: wh.Worker, h: New(wh.Worker, Options{Logger: wh.Logger, Metrics: m.Handler(), Observe: m.ObserveHTTP})}
}

// do serves one request and returns the answer.
func (h *harness) do(tb testing.TB, method, path, body string) *httptest.ResponseRecorder {
	tb.Helper()
	return h.doAuth(tb, method, path, body, "")
}

// doAuth serves one request with the given Authorization header ("" for none), a body being
// JSON, and returns the answer.
func (h *harness) doAuth(tb testing.TB, method, path, body, authorization string) *httptest.ResponseRecorder {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, req)
	return rec
}

// wantStatus fails the test unless the answer has the given status and a JSON body.
func wantStatus(tb testing.TB, rec *httptest.ResponseRecorder, status int) {
	tb.Helper()
	if rec.Code != status {
		tb.Fatalf("status: got %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if status == http.StatusNoContent {
		return
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type: got %q, want application/json", ct)
	}
}

// wantError fails the test unless the answer is a JSON error with the given status whose message
// holds every one of parts, and returns the message.
func wantError(tb testing.TB, rec *httptest.ResponseRecorder, status int, parts ...string) string {
	tb.Helper()
	wantStatus(tb, rec, status)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		tb.Fatalf("error body %q: got %v, want a JSON object", rec.Body, err)
	}
	if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, []string{"HTTPStatusCode", "Message"}) {
		tb.Errorf("error body keys: got %v, want [HTTPStatusCode Message]", keys)
	}
	var e ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		tb.Fatalf("error body %q: got %v, want an ErrorResponse", rec.Body, err)
	}
	if e.HTTPStatusCode != status {
		tb.Errorf("HTTPStatusCode: got %d, want %d", e.HTTPStatusCode, status)
	}
	if e.Message == "" {
		tb.Errorf("Message: got empty, want what is wrong")
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			tb.Errorf("Message: got %q, want it to contain %q", e.Message, p)
		}
	}
	return e.Message
}

// decodeTask decodes a task answer, checking its keys.
func decodeTask(tb testing.TB, body []byte) task.Task {
	tb.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		tb.Fatalf("task body %q: got %v, want a JSON object", body, err)
	}
	for _, k := range taskKeys {
		if _, ok := raw[k]; !ok {
			tb.Errorf("task keys: %s missing from %v", k, slices.Sorted(maps.Keys(raw)))
		}
	}
	for k := range raw {
		if !slices.Contains(taskKeys, k) && !slices.Contains(optionalKeys, k) {
			tb.Errorf("task keys: unexpected %s", k)
		}
	}
	if _, ok := raw["RegistryAuth"]; ok {
		tb.Errorf("task answer shows RegistryAuth")
	}
	var t task.Task
	if err := json.Unmarshal(body, &t); err != nil {
		tb.Fatalf("task body %q: got %v, want a task", body, err)
	}
	return t
}

// wantNothingCreated fails the test if any task exists or the runtime was asked to start one.
func (h *harness) wantNothingCreated(tb testing.TB) {
	tb.Helper()
	rec := h.do(tb, http.MethodGet, "/tasks", "")
	wantStatus(tb, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != "[]" {
		tb.Errorf("GET /tasks: got %s, want []", got)
	}
	if starts := h.rt.Starts(); len(starts) != 0 {
		tb.Errorf("runtime starts: got %d, want 0", len(starts))
	}
}

// waitState polls GET /tasks/{id} until the task is in state want, and returns it.
func (h *harness) waitState(tb testing.TB, id uuid.UUID, want task.State) task.Task {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		rec := h.doAuth(tb, http.MethodGet, "/tasks/"+id.String(), "", h.auth)
		wantStatus(tb, rec, http.StatusOK)
		got := decodeTask(tb, rec.Body.Bytes())
		if got.State == want {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s after %v: got state %v (Error %q), want %v", id, waitTimeout, got.State, got.Error, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// event is a POST /tasks body as generic JSON, for tests to bend out of shape.
type event map[string]any

func (e event) task() map[string]any { return e["Task"].(map[string]any) }

func newEvent() event {
	id := uuid.NewString()
	return event{
		"ID":        uuid.NewString(),
		"State":     2,
		"Timestamp": time.Now().UTC().Format(time.RFC3339Nano),
		"Task": map[string]any{
			"ID":           id,
			"Name":         "web-" + id[:8], // names of tasks that have not ended are unique
			"State":        1,
			"Image":        "cube-echo:latest",
			"Memory":       64 << 20,
			"ExposedPorts": map[string]any{"7777/tcp": map[string]any{}},
			"PortBindings": map[string]any{"7777/tcp": "8080"},
		},
	}
}

func (e event) json(tb testing.TB) string {
	tb.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func (e event) taskID() string { return e.task()["ID"].(string) }

// post submits e and fails the test unless it is accepted.
func (h *harness) post(tb testing.TB, e event) task.Task {
	tb.Helper()
	rec := h.do(tb, http.MethodPost, "/tasks", e.json(tb))
	wantStatus(tb, rec, http.StatusCreated)
	return decodeTask(tb, rec.Body.Bytes())
}

func TestTaskLifecycle(t *testing.T) {
	h := newHarness(t)

	rec := h.do(t, http.MethodGet, "/tasks", "")
	wantStatus(t, rec, http.StatusOK)
	if got := rec.Body.String(); got != "[]\n" {
		t.Errorf("GET /tasks with no tasks: got %q, want %q", got, "[]\n")
	}

	e := newEvent()
	created := h.post(t, e)
	if created.ID.String() != e.taskID() || created.State != task.Scheduled || created.Image != "cube-echo:latest" {
		t.Errorf("POST /tasks: got ID %s state %v image %q, want ID %s Scheduled cube-echo:latest",
			created.ID, created.State, created.Image, e.taskID())
	}

	id := created.ID
	run := h.waitState(t, id, task.Running)
	if run.ContainerID == "" || run.StartTime.IsZero() {
		t.Errorf("running task: got ContainerID %q StartTime %v, want both set", run.ContainerID, run.StartTime)
	}
	if hp := run.HostPorts["7777/tcp"]; len(hp) != 1 || hp[0].HostPort != "8080" {
		t.Errorf("HostPorts[7777/tcp]: got %+v, want one binding on 8080", hp)
	}

	rec = h.do(t, http.MethodGet, "/tasks", "")
	wantStatus(t, rec, http.StatusOK)
	var raws []json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raws); err != nil {
		t.Fatalf("GET /tasks body %q: got %v, want a JSON array", rec.Body, err)
	}
	if len(raws) != 1 {
		t.Fatalf("GET /tasks: got %d tasks, want 1", len(raws))
	}
	if got := decodeTask(t, raws[0]); got.ID != id {
		t.Errorf("GET /tasks: got task %s, want %s", got.ID, id)
	}

	rec = h.do(t, http.MethodDelete, "/tasks/"+id.String(), "")
	wantStatus(t, rec, http.StatusNoContent)
	if rec.Body.Len() != 0 {
		t.Errorf("DELETE body: got %q, want empty", rec.Body)
	}
	done := h.waitState(t, id, task.Completed)
	if done.FinishTime.IsZero() {
		t.Errorf("FinishTime: got zero, want set")
	}
	if stops := h.rt.Stops(); !slices.Equal(stops, []string{run.ContainerID}) {
		t.Errorf("runtime stops: got %v, want [%s]", stops, run.ContainerID)
	}

	// A second DELETE of the stopped task is fine and does nothing.
	rec = h.do(t, http.MethodDelete, "/tasks/"+id.String(), "")
	wantStatus(t, rec, http.StatusNoContent)
}

func TestRestartCompletedConflicts(t *testing.T) {
	h := newHarness(t)
	e := newEvent()
	created := h.post(t, e)
	h.waitState(t, created.ID, task.Running)
	wantStatus(t, h.do(t, http.MethodDelete, "/tasks/"+created.ID.String(), ""), http.StatusNoContent)
	h.waitState(t, created.ID, task.Completed)

	e["ID"] = uuid.NewString()
	e.task()["RestartCount"] = 1
	wantError(t, h.do(t, http.MethodPost, "/tasks", e.json(t)), http.StatusConflict, created.ID.String(), "Completed")
	if n := len(h.rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}
}

func TestRestart(t *testing.T) {
	h := newHarness(t)
	e := newEvent()
	created := h.post(t, e)
	first := h.waitState(t, created.ID, task.Running)

	e["ID"] = uuid.NewString()
	e.task()["RestartCount"] = 1
	h.post(t, e)
	deadline := time.Now().Add(waitTimeout)
	for {
		got := h.waitState(t, created.ID, task.Running)
		if got.ContainerID != first.ContainerID {
			if got.RestartCount != 1 {
				t.Errorf("RestartCount: got %d, want 1", got.RestartCount)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: got container %s, want a new one", waitTimeout, got.ContainerID)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSubmitIdempotent(t *testing.T) {
	h := newHarness(t)
	e := newEvent()
	body := e.json(t)
	first := h.post(t, e)
	rec := h.do(t, http.MethodPost, "/tasks", body)
	wantStatus(t, rec, http.StatusCreated)
	if again := decodeTask(t, rec.Body.Bytes()); again.ID != first.ID {
		t.Errorf("second POST of the event: got task %s, want %s", again.ID, first.ID)
	}
	h.waitState(t, first.ID, task.Running)
	if n := len(h.rt.Starts()); n != 1 {
		t.Errorf("runtime starts: got %d, want 1", n)
	}

	// The same event ID for another task is a client bug, not a repeat.
	other := newEvent()
	other["ID"] = e["ID"]
	wantError(t, h.do(t, http.MethodPost, "/tasks", other.json(t)), http.StatusConflict, "ID:", e["ID"].(string))
	wantError(t, h.do(t, http.MethodGet, "/tasks/"+other.taskID(), ""), http.StatusNotFound)
}

func TestGetAndDeleteErrors(t *testing.T) {
	h := newHarness(t)
	unknown := uuid.NewString()
	tests := []struct {
		method, path string
		status       int
		parts        []string
	}{
		{http.MethodGet, "/tasks/" + unknown, http.StatusNotFound, []string{unknown}},
		{http.MethodDelete, "/tasks/" + unknown, http.StatusNotFound, []string{unknown}},
		{http.MethodGet, "/tasks/not-a-uuid", http.StatusBadRequest, []string{"taskID", "not-a-uuid"}},
		{http.MethodDelete, "/tasks/not-a-uuid", http.StatusBadRequest, []string{"taskID", "not-a-uuid"}},
		{http.MethodGet, "/tasks/" + uuid.Nil.String(), http.StatusBadRequest, []string{"taskID"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			wantError(t, h.do(t, tt.method, tt.path, ""), tt.status, tt.parts...)
		})
	}
	h.wantNothingCreated(t)
}

func TestRoutingErrors(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/tasks/" + uuid.NewString() + "/nope", http.StatusNotFound},
		{http.MethodPut, "/tasks", http.StatusMethodNotAllowed},
		{http.MethodPatch, "/tasks/" + uuid.NewString(), http.StatusMethodNotAllowed},
		{http.MethodPost, "/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			wantError(t, h.do(t, tt.method, tt.path, ""), tt.status, tt.method, tt.path)
		})
	}
	h.wantNothingCreated(t)
}

func TestSubmitBadRequests(t *testing.T) {
	valid := newEvent().json(t)
	tests := []struct {
		name   string
		body   string
		status int
		parts  []string // each must be in the message
	}{
		{"malformed JSON", `{"ID": "x",}`, http.StatusBadRequest, []string{"malformed JSON", "offset 12"}},
		{"truncated JSON", valid[:40], http.StatusBadRequest, []string{"ends early", "offset 40"}},
		{"unknown field", `{"ID":"` + uuid.NewString() + `","Colour":"red"}`, http.StatusBadRequest, []string{`"Colour"`, "offset"}},
		{"unknown task field", bent(t, func(e event) { e.task()["Replicas"] = 3 }), http.StatusBadRequest, []string{`"Replicas"`}},
		{"wrong type", bent(t, func(e event) { e.task()["Memory"] = "lots" }), http.StatusBadRequest, []string{"Task.Memory:", "int64", "string"}},
		{"wrong type deep", bent(t, func(e event) { e.task()["HostPorts"] = map[string]any{"80/tcp": []any{map[string]any{"HostPort": 80}}} }), http.StatusBadRequest, []string{"Task.HostPorts"}},
		{"object expected", bent(t, func(e event) { e["Task"] = []any{} }), http.StatusBadRequest, []string{"Task: want a JSON object, got JSON array"}},
		{"wrong port set", bent(t, func(e event) { e.task()["ExposedPorts"] = []any{"80/tcp"} }), http.StatusBadRequest, []string{"Task.ExposedPorts: want a JSON object"}},
		{"wrong state type", bent(t, func(e event) { e["State"] = "Running" }), http.StatusBadRequest, []string{"State"}},
		{"array body", `[]`, http.StatusBadRequest, []string{"the body: want a JSON object, got JSON array"}},
		{"missing image", bent(t, func(e event) { delete(e.task(), "Image") }), http.StatusBadRequest, []string{"Task.Image", "required"}},
		{"bad image", bent(t, func(e event) { e.task()["Image"] = "Cube Echo" }), http.StatusBadRequest, []string{"Task.Image"}},
		{"bad memory", bent(t, func(e event) { e.task()["Memory"] = 5 }), http.StatusBadRequest, []string{"Task.Memory"}},
		{"bad port", bent(t, func(e event) { e.task()["PortBindings"] = map[string]any{"http": "80"} }), http.StatusBadRequest, []string{"Task.PortBindings"}},
		{"missing event ID", bent(t, func(e event) { delete(e, "ID") }), http.StatusBadRequest, []string{"ID: is required"}},
		{"bad event ID", bent(t, func(e event) { e["ID"] = "event-1" }), http.StatusBadRequest, []string{"ID:", `"event-1"`, "not a UUID"}},
		{"nil event ID", bent(t, func(e event) { e["ID"] = uuid.Nil.String() }), http.StatusBadRequest, []string{"ID:", "not a UUID"}},
		{"missing task ID", bent(t, func(e event) { delete(e.task(), "ID") }), http.StatusBadRequest, []string{"Task.ID: is required"}},
		{"bad task ID", bent(t, func(e event) { e.task()["ID"] = "task-1" }), http.StatusBadRequest, []string{"Task.ID:", `"task-1"`}},
		{"numeric task ID", bent(t, func(e event) { e.task()["ID"] = 7 }), http.StatusBadRequest, []string{"Task.ID"}},
		{"bad timestamp", bent(t, func(e event) { e["Timestamp"] = "yesterday" }), http.StatusBadRequest, []string{"Timestamp", `"yesterday"`}},
		{"event state out of range", bent(t, func(e event) { e["State"] = 9 }), http.StatusBadRequest, []string{"State: 9"}},
		{"task state out of range", bent(t, func(e event) { e.task()["State"] = -1 }), http.StatusBadRequest, []string{"Task.State"}},
		{"empty body", ``, http.StatusBadRequest, []string{"empty"}},
		{"blank body", "  \n", http.StatusBadRequest, []string{"empty"}},
		{"null body", `null`, http.StatusBadRequest, []string{"ID"}},
		{"trailing object", valid + `{}`, http.StatusBadRequest, []string{"single JSON object", "offset"}},
		{"trailing garbage", valid + ` x`, http.StatusBadRequest, []string{"single JSON object", "offset"}},
		{"too large", bent(t, func(e event) { e.task()["Name"] = strings.Repeat("a", MaxBodyBytes) }), http.StatusRequestEntityTooLarge, []string{"larger than 1048576 bytes"}},
		{"too large after the object", valid + strings.Repeat(" ", MaxBodyBytes), http.StatusRequestEntityTooLarge, []string{"larger than"}},
		{"task Running", bent(t, func(e event) { e.task()["State"] = 2 }), http.StatusConflict, []string{"Task.State", "Running"}},
		{"task Completed", bent(t, func(e event) { e.task()["State"] = 3 }), http.StatusConflict, []string{"Task.State"}},
		{"task Failed", bent(t, func(e event) { e.task()["State"] = 4 }), http.StatusConflict, []string{"Task.State"}},
	}
	h := newHarness(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := wantError(t, h.do(t, http.MethodPost, "/tasks", tt.body), tt.status, tt.parts...)
			if strings.Contains(msg, "Task.Task") || strings.Contains(msg, "eventRequest") || strings.Contains(msg, "taskRequest") {
				t.Errorf("Message: got %q, want no names of the API's own types", msg)
			}
			h.wantNothingCreated(t)
		})
	}
}

// bent returns a valid POST /tasks body changed by bend.
func bent(tb testing.TB, bend func(event)) string {
	e := newEvent()
	bend(e)
	return e.json(tb)
}

func TestSubmitTimestamp(t *testing.T) {
	h := newHarness(t)
	for _, ts := range []string{"", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123456789+02:00"} {
		t.Run(ts, func(t *testing.T) {
			e := newEvent()
			e["Timestamp"] = ts
			h.post(t, e)
		})
	}
	t.Run("missing", func(t *testing.T) {
		e := newEvent()
		delete(e, "Timestamp")
		h.post(t, e)
	})
}

// bookManagerBody is a TaskEvent as the book's Cube manager sends it: every key of its Task,
// zero times, HostPorts null, the task Scheduled and the event asking for Running.
const bookManagerBody = `{
  "ID": "1e5a1c7e-7a1c-4d5e-9d7a-1c7e7a1c4d5e",
  "State": 2,
  "Timestamp": "2024-05-01T12:00:00.123456789Z",
  "Task": {
    "ID": "2b7c3d9f-8e1f-4a6b-9c2d-3e4f5a6b7c8d",
    "ContainerID": "",
    "Name": "test-chapter-5",
    "State": 1,
    "Image": "strm/helloworld-http",
    "Cpu": 0,
    "Memory": 0,
    "Disk": 0,
    "ExposedPorts": {"80/tcp": {}},
    "PortBindings": null,
    "RestartPolicy": "",
    "StartTime": "0001-01-01T00:00:00Z",
    "FinishTime": "0001-01-01T00:00:00Z",
    "HostPorts": null,
    "HealthCheck": "",
    "RestartCount": 0
  }
}`

func TestSubmitBookManagerBody(t *testing.T) {
	h := newHarness(t)
	rec := h.do(t, http.MethodPost, "/tasks", bookManagerBody)
	wantStatus(t, rec, http.StatusCreated)
	got := decodeTask(t, rec.Body.Bytes())
	if got.ID.String() != "2b7c3d9f-8e1f-4a6b-9c2d-3e4f5a6b7c8d" || got.Name != "test-chapter-5" || got.Image != "strm/helloworld-http" {
		t.Errorf("accepted task: got ID %s Name %q Image %q, want the body's", got.ID, got.Name, got.Image)
	}
	run := h.waitState(t, got.ID, task.Running)
	if len(run.HostPorts["80/tcp"]) != 1 {
		t.Errorf("HostPorts[80/tcp]: got %+v, want one binding", run.HostPorts["80/tcp"])
	}
}

func TestStats(t *testing.T) {
	h := newHarness(t)
	created := h.post(t, newEvent())
	h.waitState(t, created.ID, task.Running)

	rec := h.do(t, http.MethodGet, "/stats", "")
	wantStatus(t, rec, http.StatusOK)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("stats body %q: got %v, want a JSON object", rec.Body, err)
	}
	want := []string{"CpuStats", "DiskStats", "LoadStats", "MemStats", "TaskCount"}
	if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, want) {
		t.Errorf("stats keys: got %v, want %v", keys, want)
	}
	if got := string(raw["TaskCount"]); got != "1" {
		t.Errorf("TaskCount: got %s, want 1", got)
	}
	if got := string(raw["MemStats"]); got == "null" {
		t.Errorf("MemStats: got null, want the node's memory")
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t)

	rec := h.do(t, http.MethodGet, "/healthz", "")
	wantStatus(t, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"Status":"ok"}` {
		t.Errorf("GET /healthz: got %s, want {\"Status\":\"ok\"}", got)
	}
	// Ready once the worker has recovered its tasks, at once with the fake runtime.
	deadline := time.Now().Add(5 * time.Second)
	for rec = h.do(t, http.MethodGet, "/readyz", ""); rec.Code != http.StatusOK && time.Now().Before(deadline); rec = h.do(t, http.MethodGet, "/readyz", "") {
		time.Sleep(2 * time.Millisecond)
	}
	wantStatus(t, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"Status":"ready"}` {
		t.Errorf("GET /readyz: got %s, want {\"Status\":\"ready\"}", got)
	}

	// The Docker adapter reports an Engine that does not answer as an EUNAVAILABLE error; the
	// worker's next ping sees it.
	h.rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "ping docker: Cannot connect to the Docker daemon"))
	wantError(t, h.readyzUntil(t, http.StatusServiceUnavailable), http.StatusServiceUnavailable,
		"the container runtime does not answer", "Cannot connect to the Docker daemon")
	// Liveness does not depend on the runtime.
	wantStatus(t, h.do(t, http.MethodGet, "/healthz", ""), http.StatusOK)

	h.rt.SetPingErr(nil)
	wantStatus(t, h.readyzUntil(t, http.StatusOK), http.StatusOK)
}

// readyzUntil polls GET /readyz until it answers status (the worker pings its runtime every
// 10 ms in the harness), and returns the last answer.
func (h *harness) readyzUntil(tb testing.TB, status int) *httptest.ResponseRecorder {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		rec := h.doAuth(tb, http.MethodGet, "/readyz", "", h.auth)
		if rec.Code == status || time.Now().After(deadline) {
			return rec
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRecoverer(t *testing.T) {
	s := &Server{log: testLogger(t)}
	srv := httptest.NewServer(s.recoverer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		w.WriteHeader(http.StatusOK)
	})))
	defer srv.Close()

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: got %v, want an answer", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body of GET %s: %v", path, err)
		}
		return resp, body
	}

	resp, body := get("/panic")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status after a panic: got %d, want 500", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var e ErrorResponse
	if err := json.Unmarshal(body, &e); err != nil || e.HTTPStatusCode != 500 || e.Message != "internal error" {
		t.Errorf("body after a panic: got %q (%v), want {\"HTTPStatusCode\":500,\"Message\":\"internal error\"}", body, err)
	}
	if bytes.Contains(body, []byte("boom")) {
		t.Errorf("body after a panic: got %q, want the panic value kept from the client", body)
	}

	// The server keeps serving.
	if resp, _ := get("/ok"); resp.StatusCode != http.StatusOK {
		t.Errorf("status after the panic: got %d, want 200", resp.StatusCode)
	}
}
