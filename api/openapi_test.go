package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
)

func init() {
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
}

// loadOpenAPI loads and checks the embedded document and returns it with a router over it.
func loadOpenAPI(tb testing.TB) (*openapi3.T, routers.Router) {
	tb.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPI())
	if err != nil {
		tb.Fatalf("load api/openapi.json: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		tb.Fatalf("api/openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		tb.Fatalf("router over api/openapi.json: %v", err)
	}
	return doc, router
}

// contractCase is one request whose answer is checked against the document.
type contractCase struct {
	name   string
	method string
	path   string // may hold {id}: a Running task's ID, {done}: a Completed one's
	body   string
	header map[string]string
	status int  // the answer's status
	badReq bool // the request breaks the contract on purpose: only the answer is checked
	stream bool // the answer is a stream: the request is cut after a moment
}

// TestOpenAPI sends requests to every route, the error answers included, and checks each answer
// (status, headers, body) against api/openapi.json, and each request the API accepts too.
func TestOpenAPI(t *testing.T) {
	doc, router := loadOpenAPI(t)
	h := newHarness(t)
	held := newEvent()
	held.task()["Name"] = "held"
	running := h.post(t, held).ID
	h.rt.Print(h.waitState(t, running, task.Running).ContainerID, "line 1", "line 2")
	done := h.post(t, newEvent()).ID
	h.waitState(t, done, task.Running)
	wantStatus(t, h.do(t, http.MethodDelete, "/tasks/"+done.String(), ""), http.StatusNoContent)
	h.waitState(t, done, task.Completed)
	gone := h.post(t, newEvent()).ID
	h.waitState(t, gone, task.Running)

	tooLarge := bent(t, func(e event) { e.task()["Name"] = strings.Repeat("a", MaxBodyBytes) })
	tests := []contractCase{
		{name: "submit", method: "POST", path: "/tasks", body: newEvent().json(t), status: 201},
		{name: "submit the book's body", method: "POST", path: "/tasks", body: bookManagerBody, status: 201},
		{name: "submit with every field", method: "POST", path: "/tasks", body: fullEvent(t), status: 201},
		{name: "submit malformed", method: "POST", path: "/tasks", body: `{"ID": "x",}`, status: 400, badReq: true},
		{name: "submit unknown field", method: "POST", path: "/tasks", body: bent(t, func(e event) { e.task()["Replicas"] = 3 }), status: 400, badReq: true},
		{name: "submit bad spec", method: "POST", path: "/tasks", body: bent(t, func(e event) { e.task()["Memory"] = 5 }), status: 400},
		{name: "submit too large", method: "POST", path: "/tasks", body: tooLarge, status: 413, badReq: true},
		{name: "submit Running task", method: "POST", path: "/tasks", body: bent(t, func(e event) { e.task()["State"] = 2 }), status: 409},
		{name: "restart Completed", method: "POST", path: "/tasks", body: restartOf(t, h, done), status: 409},
		{name: "list", method: "GET", path: "/tasks", status: 200},
		{name: "get", method: "GET", path: "/tasks/{id}", status: 200},
		{name: "get Completed", method: "GET", path: "/tasks/{done}", status: 200},
		{name: "get unknown", method: "GET", path: "/tasks/" + uuid.NewString(), status: 404},
		{name: "get not a UUID", method: "GET", path: "/tasks/not-a-uuid", status: 400, badReq: true},
		{name: "stop unknown", method: "DELETE", path: "/tasks/" + uuid.NewString(), status: 404},
		{name: "stop not a UUID", method: "DELETE", path: "/tasks/x", status: 400, badReq: true},
		{name: "remove bad flag", method: "DELETE", path: "/tasks/{gone}?remove=maybe", status: 400, badReq: true},
		{name: "remove", method: "DELETE", path: "/tasks/{gone}?remove=true", status: 204},
		{name: "get removed", method: "GET", path: "/tasks/{gone}", status: 404},
		{name: "remove removed", method: "DELETE", path: "/tasks/{gone}?remove=true", status: 404},
		{name: "node stats", method: "GET", path: "/stats", status: 200},
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "version", method: "GET", path: "/version", status: 200},
		{name: "submit a name a running task holds", method: "POST", path: "/tasks", body: bent(t, func(e event) { e.task()["Name"] = "held" }), status: 409},
		{name: "openapi", method: "GET", path: "/openapi.json", status: 200},
		{name: "logs", method: "GET", path: "/tasks/{id}/logs", status: 200},
		{name: "logs tail", method: "GET", path: "/tasks/{id}/logs?tail=1&timestamps=true", status: 200},
		{name: "logs follow", method: "GET", path: "/tasks/{id}/logs?follow=true", status: 200, stream: true},
		{name: "logs unknown", method: "GET", path: "/tasks/" + uuid.NewString() + "/logs", status: 404},
		{name: "logs since", method: "GET", path: "/tasks/{id}/logs?since=10m&timestamps=false", status: 200},
		{name: "logs without a container", method: "GET", path: "/tasks/{done}/logs", status: 409},
		{name: "logs bad tail", method: "GET", path: "/tasks/{id}/logs?tail=many", status: 400, badReq: true},
		{name: "task stats", method: "GET", path: "/tasks/{id}/stats", status: 200},
		{name: "task stats unknown", method: "GET", path: "/tasks/" + uuid.NewString() + "/stats", status: 404},
		{name: "task stats ended", method: "GET", path: "/tasks/{done}/stats", status: 409},
		{name: "events", method: "GET", path: "/events", header: map[string]string{"Last-Event-ID": "0"}, status: 200, stream: true},
		{name: "events bad Last-Event-ID", method: "GET", path: "/events", header: map[string]string{"Last-Event-ID": "x"}, status: 400, badReq: true},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
		// Last: the queue and the runtime, broken.
		{name: "readyz, runtime down", method: "GET", path: "/readyz", status: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "readyz, runtime down" {
				h.rt.SetPingErr(task.Errorf(task.EUNAVAILABLE, "ping docker: Cannot connect to the Docker daemon"))
				defer h.rt.SetPingErr(nil)
				h.readyzUntil(t, http.StatusServiceUnavailable)
			}
			path := strings.NewReplacer("{id}", running.String(), "{done}", done.String(), "{gone}", gone.String()).Replace(tt.path)
			checkContract(t, doc, router, h.h, tt, path)
		})
	}
}

// checkContract serves the case's request with h and checks it and its answer against doc.
func checkContract(t *testing.T, doc *openapi3.T, router routers.Router, h http.Handler, tt contractCase, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tt.stream {
		ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
	}
	req := httptest.NewRequestWithContext(ctx, tt.method, path, strings.NewReader(tt.body))
	if tt.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range tt.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if rec.Code != tt.status {
		t.Fatalf("%s %s: got %d, want %d (body %.300s)", tt.method, path, rec.Code, tt.status, rec.Body)
	}

	// The request, with its body again, as the router and validators read it.
	vreq := httptest.NewRequest(tt.method, path, strings.NewReader(tt.body))
	vreq.Header = req.Header.Clone()
	route, params, err := router.FindRoute(vreq)
	if err != nil {
		t.Fatalf("%s %s is not in api/openapi.json: %v", tt.method, path, err)
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		MultiError:            true,
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	if !tt.badReq {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("request %s %s breaks api/openapi.json: %v", tt.method, path, err)
		}
	}
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 rec.Code,
		Header:                 rec.Header(),
		Body:                   io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
		Options:                opts,
	}); err != nil {
		t.Errorf("answer %d to %s %s breaks api/openapi.json: %v\nbody: %.500s", rec.Code, tt.method, path, err, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); strings.HasPrefix(ct, "text/event-stream") {
		checkEventStream(t, doc, rec.Body.String())
	}
}

// checkEventStream checks every message of an event stream: a numeric id equal to its data's Seq,
// and data that is a StreamEvent.
func checkEventStream(t *testing.T, doc *openapi3.T, body string) {
	t.Helper()
	schema := doc.Components.Schemas["StreamEvent"].Value
	for _, msg := range strings.Split(body, "\n\n") {
		var id, data string
		for _, line := range strings.Split(msg, "\n") {
			switch {
			case strings.HasPrefix(line, "id:"):
				id = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
			case strings.HasPrefix(line, "data:"):
				data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
			}
		}
		if data == "" {
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Errorf("event data %q: not JSON: %v", data, err)
			continue
		}
		if err := schema.VisitJSON(v); err != nil {
			t.Errorf("event data %q breaks the StreamEvent schema: %v", data, err)
		}
		seq, _ := v.(map[string]any)["Seq"].(float64)
		if n, err := strconv.ParseInt(id, 10, 64); err != nil || float64(n) != seq {
			t.Errorf("event %q: id %q, want its Seq", data, id)
		}
	}
}

// TestOpenAPIErrorAnswers checks the answers no route of the document describes (an unknown
// route, a method not allowed, and those of the authentication that comes before routing)
// against the ErrorResponse schema, and the 401 and 403 of routes against the document.
func TestOpenAPIErrorAnswers(t *testing.T) {
	doc, router := loadOpenAPI(t)
	schema := doc.Components.Schemas["ErrorResponse"].Value
	h := newHarness(t)
	for _, tt := range []struct{ method, path string }{{"GET", "/nope"}, {"PUT", "/tasks"}, {"POST", "/stats"}} {
		rec := h.do(t, tt.method, tt.path, "")
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: body %q is not JSON", tt.method, tt.path, rec.Body)
		}
		if err := schema.VisitJSON(v); err != nil {
			t.Errorf("%s %s: answer %s breaks the ErrorResponse schema: %v", tt.method, tt.path, rec.Body, err)
		}
	}

	const full, read = "full-access-token-0123456789", "read-only-token-0123456789"
	authed := New(h.w, Options{Logger: testLogger(t), Token: full, ReadToken: read})
	for _, tt := range []contractCase{
		{name: "no token", method: "GET", path: "/tasks", status: 401},
		{name: "wrong token", method: "GET", path: "/stats", header: map[string]string{"Authorization": "Bearer nope"}, status: 401},
		{name: "read token", method: "GET", path: "/tasks", header: map[string]string{"Authorization": "Bearer " + read}, status: 200},
		{name: "read token, mutating", method: "POST", path: "/tasks", body: newEvent().json(t), header: map[string]string{"Authorization": "Bearer " + read}, status: 403},
		{name: "read token, stop", method: "DELETE", path: "/tasks/" + uuid.NewString(), header: map[string]string{"Authorization": "Bearer " + read}, status: 403},
		{name: "healthz open", method: "GET", path: "/healthz", status: 200},
		{name: "openapi needs a token", method: "GET", path: "/openapi.json", status: 401},
		{name: "events need a token", method: "GET", path: "/events", status: 401},
		{name: "metrics need a token", method: "GET", path: "/metrics", status: 401},
		{name: "logs need a token", method: "GET", path: "/tasks/" + uuid.NewString() + "/logs", status: 401},
		{name: "read token, logs", method: "GET", path: "/tasks/" + uuid.NewString() + "/logs", header: map[string]string{"Authorization": "Bearer " + read}, status: 404},
	} {
		t.Run(tt.name, func(t *testing.T) { checkContract(t, doc, router, authed, tt, tt.path) })
	}
}

// fullEvent is a POST /tasks body with every spec field the worker accepts without allowances.
func fullEvent(tb testing.TB) string {
	e := newEvent()
	tk := e.task()
	tk["Env"] = []string{"A=1"}
	tk["Cmd"] = []string{"--listen", ":7777"}
	tk["Cpu"] = 0.5
	tk["Disk"] = 1 << 30
	tk["RestartPolicy"] = "on-failure"
	tk["Restart"] = map[string]any{"MaxAttempts": 3, "Delay": "1s", "MaxDelay": 30, "ResetAfter": "10m"}
	tk["Health"] = map[string]any{"Type": "http", "Path": "/health", "Port": 7777, "Interval": "5s", "Timeout": "1s", "Retries": 2, "StartPeriod": "2s"}
	tk["PullPolicy"] = "if-not-present"
	tk["RegistryAuth"] = map[string]any{"Username": "u", "Password": "p"}
	tk["MemoryReservation"] = 32 << 20
	tk["PidsLimit"] = 100
	tk["StopTimeout"] = 5
	tk["StopSignal"] = "SIGTERM"
	tk["PortBindings"] = map[string]any{"7777/tcp": ""}
	return e.json(tb)
}

// restartOf is a POST /tasks body that restarts the task id with a new event.
func restartOf(tb testing.TB, h *harness, id uuid.UUID) string {
	tb.Helper()
	rec := h.do(tb, http.MethodGet, "/tasks/"+id.String(), "")
	wantStatus(tb, rec, http.StatusOK)
	tk := decodeTask(tb, rec.Body.Bytes())
	tk.State = task.Scheduled
	tk.RestartCount++
	b, err := json.Marshal(task.Event{ID: uuid.New(), State: task.Running, Task: tk})
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// TestOpenAPIContractStub checks the document's streaming and observing routes (logs, task stats,
// events, metrics) with a stub that answers as their contract says, so that the document is known
// to describe answers that can be given independently of the worker; TestOpenAPI checks the real
// ones.
func TestOpenAPIContractStub(t *testing.T) {
	doc, router := loadOpenAPI(t)
	id, ended := uuid.New(), uuid.New()
	fail := func(w http.ResponseWriter, status int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(ErrorResponse{HTTPStatusCode: status, Message: msg})
	}
	stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			io.WriteString(w, "# HELP cube_tasks Tasks by state.\n# TYPE cube_tasks gauge\ncube_tasks{state=\"Running\"} 1\n")
		case p == "/events":
			if _, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err != nil && r.Header.Get("Last-Event-ID") != "" {
				fail(w, 400, "Last-Event-ID: not an event number")
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			io.WriteString(w, "id: 2\n\n: keep-alive\n\n")
			for seq := 1; seq <= 2; seq++ {
				fmt.Fprintf(w, "id: %d\nevent: task\ndata: {\"Seq\":%d,\"Time\":\"2025-01-02T03:04:05Z\",\"TaskID\":\"%s\",\"Name\":\"web\",\"Type\":\"Started\",\"Message\":\"container abc\",\"State\":2,\"HealthStatus\":\"\",\"RestartCount\":0}\n\n", seq, seq, id)
			}
			<-r.Context().Done()
		case p == "/tasks/"+id.String()+"/logs":
			if tail := r.URL.Query().Get("tail"); tail != "" && tail != "all" {
				if _, err := strconv.Atoi(tail); err != nil {
					fail(w, 400, "tail: "+strconv.Quote(tail)+" is not a number of lines or all")
					return
				}
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "line 1\nline 2\n")
		case p == "/tasks/"+ended.String()+"/logs":
			fail(w, 409, "task "+ended.String()+" has no container")
		case p == "/tasks/"+id.String()+"/stats":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"TaskID":"`+id.String()+`","ContainerID":"c0ffee","Time":"2025-01-02T03:04:05Z","CPUPercent":12.5,"MemoryUsage":1048576,"MemoryLimit":67108864,"NetworkRx":10,"NetworkTx":20,"BlockRead":0,"BlockWrite":4096,"PIDs":3}`)
		case p == "/tasks/"+ended.String()+"/stats":
			fail(w, 409, "task "+ended.String()+" is not running")
		default:
			fail(w, 404, "task not found")
		}
	})
	for _, tt := range []contractCase{
		{name: "logs", method: "GET", path: "/tasks/{id}/logs?tail=2&timestamps=false&since=10m", status: 200},
		{name: "logs bad tail", method: "GET", path: "/tasks/{id}/logs?tail=many", status: 400, badReq: true},
		{name: "logs without a container", method: "GET", path: "/tasks/{done}/logs", status: 409},
		{name: "logs unknown", method: "GET", path: "/tasks/" + uuid.NewString() + "/logs", status: 404},
		{name: "task stats", method: "GET", path: "/tasks/{id}/stats", status: 200},
		{name: "task stats not running", method: "GET", path: "/tasks/{done}/stats", status: 409},
		{name: "events", method: "GET", path: "/events", header: map[string]string{"Last-Event-ID": "0"}, status: 200, stream: true},
		{name: "events bad Last-Event-ID", method: "GET", path: "/events", header: map[string]string{"Last-Event-ID": "x"}, status: 400, badReq: true},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkContract(t, doc, router, stub, tt, strings.NewReplacer("{id}", id.String(), "{done}", ended.String()).Replace(tt.path))
		})
	}
}
