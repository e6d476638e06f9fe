package docker_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
)

// List reads the Engine's answer itself, one container at a time: it returns what the labels and
// the state say of each container of its worker, and nothing of another worker's, of an
// unlabelled container, or of one labelled with this worker's name but no task.
func TestListReadsOnlyItsWorkersContainers(t *testing.T) {
	rt, name := newRuntime(t)
	other, otherName := newRuntime(t)
	created := benchTask()
	createdID, err := rt.Create(ctx(t), created)
	if err != nil {
		t.Fatal(err)
	}
	running := echoTask("--listen", ":7777")
	running.LastEvent = uuid.NewString()
	rc, err := rt.Start(ctx(t), running, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(ctx(t), benchTask()); err != nil {
		t.Fatal(err)
	}
	// This worker's name but no task label: not a task container, whoever made it.
	cli := testenv.Docker(t)
	bare, err := cli.ContainerCreate(ctx(t), &container.Config{Image: testenv.EchoImage,
		Labels: map[string]string{docker.LabelWorker: name, "CUBE.TASK.ID": uuid.NewString()}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerRemove(ctx(t), bare.ID, container.RemoveOptions{Force: true}) })

	list, err := rt.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]task.Container{}
	for _, c := range list {
		byID[c.ID] = c
	}
	if len(list) != 2 || len(byID) != 2 {
		t.Fatalf("List of %s: got %d containers %+v, want just its two task containers", name, len(list), list)
	}
	for _, want := range []struct {
		id      string
		tk      task.Task
		running bool
	}{{createdID, created, false}, {rc.ID, running, true}} {
		c, ok := byID[want.id]
		switch {
		case !ok:
			t.Errorf("List: container %s missing", task.ShortID(want.id))
		case c.TaskID != want.tk.ID || c.EventID != want.tk.LastEvent || c.Worker != name || c.Running != want.running || c.Paused:
			t.Errorf("List: got %+v, want task %s, event %s, worker %s, running %v", c, want.tk.ID, want.tk.LastEvent, name, want.running)
		case c.Created.IsZero() || time.Since(c.Created) > 10*time.Minute:
			t.Errorf("List: container %s created %v, want a minute or so ago", task.ShortID(c.ID), c.Created)
		case !c.SpecRead || c.SpecRestartCount != want.tk.RestartCount || c.Spec != nil:
			t.Errorf("List: container %s: got SpecRead %v, SpecRestartCount %d, Spec %p; want true, %d, nil (Inspect has it)",
				task.ShortID(c.ID), c.SpecRead, c.SpecRestartCount, c.Spec, want.tk.RestartCount)
		}
	}
	if ol, err := other.List(ctx(t)); err != nil || len(ol) != 1 || ol[0].Worker != otherName {
		t.Errorf("List of %s: got %+v, %v; want just its own container", otherName, ol, err)
	}
}

// A container made between two Lists is in the second with its spec decoded, and the specs the
// first decoded are kept, not decoded again.
func TestListSeesAContainerMadeBetweenLists(t *testing.T) {
	rt, _ := newRuntime(t)
	first := benchTask()
	if _, err := rt.Create(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	before, err := rt.List(ctx(t))
	if err != nil || len(before) != 1 {
		t.Fatalf("first List: got %+v, %v; want one container", before, err)
	}
	second := benchTask()
	id, err := rt.Create(ctx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	after, err := rt.List(ctx(t))
	if err != nil || len(after) != 2 {
		t.Fatalf("second List: got %+v, %v; want two containers", after, err)
	}
	for _, c := range after {
		switch c.ID {
		case before[0].ID, id:
			if !c.SpecRead || c.SpecRestartCount != 0 {
				t.Errorf("second List: container %s has SpecRead %v, SpecRestartCount %d; want true, 0", task.ShortID(c.ID), c.SpecRead, c.SpecRestartCount)
			}
		default:
			t.Errorf("second List: unexpected container %s", task.ShortID(c.ID))
		}
	}
	if got := rt.CachedSpecs(); got != 2 {
		t.Errorf("cached specs: got %d, want 2", got)
	}
	if got := rt.DecodedSpecs(); got != 2 {
		t.Errorf("spec labels decoded over two Lists: got %d, want 2 (one each)", got)
	}
}

// A List the Engine does not answer fails within the call's deadline with EUNAVAILABLE and keeps
// the cached specs: an answer that never came does not say the containers are gone.
func TestListOfAHungEngineIsUnavailable(t *testing.T) {
	_, name := newRuntime(t)
	rt, proxy := proxiedRuntime(t, name, time.Second)
	if _, err := rt.Create(ctx(t), benchTask()); err != nil {
		t.Fatal(err)
	}
	if list, err := rt.List(ctx(t)); err != nil || len(list) != 1 {
		t.Fatalf("List: got %+v, %v; want one container", list, err)
	}
	proxy.Set(faultproxy.Hang)
	start := time.Now()
	_, err := rt.List(ctx(t))
	if task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("List of a hung Engine: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("List of a hung Engine took %v, want about its 1 s deadline", d)
	}
	if got := rt.CachedSpecs(); got != 1 {
		t.Errorf("cached specs after a failed List: got %d, want 1", got)
	}
	proxy.Set(faultproxy.Down)
	if _, err := rt.List(ctx(t)); task.ErrorCode(err) != task.EUNAVAILABLE {
		t.Errorf("List of a down Engine: got %v (%s), want EUNAVAILABLE", err, task.ErrorCode(err))
	}
}

// engineStub serves the Engine's ping and, for GET /containers/json, list; it counts the
// connections it accepted. It stands in for an Engine that answers what a real one will not be
// made to: an error status, a label spelled to pass for cube's own.
func engineStub(t *testing.T, list http.HandlerFunc) (*docker.Runtime, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "engine.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/_ping":
				w.Header().Set("API-Version", "1.41")
				_, _ = io.WriteString(w, "OK")
			case strings.HasSuffix(r.URL.Path, "/containers/json"):
				list(w, r)
			default:
				http.NotFound(w, r)
			}
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	rt := docker.NewWithClient(cli, docker.Options{Worker: "stub", CallTimeout: 5 * time.Second})
	t.Cleanup(func() { rt.Close() })
	return rt, &conns
}

// An Engine's error status is of the kind the SDK's own calls make of it: a 503 is the Engine
// unavailable (a start then waits for it), a 404 not found, and so on.
func TestListErrorStatusesAreTheirKinds(t *testing.T) {
	for status, want := range map[int]task.Code{
		http.StatusServiceUnavailable:  task.EUNAVAILABLE,
		http.StatusNotFound:            task.ENOTFOUND,
		http.StatusBadRequest:          task.EINVALID,
		http.StatusConflict:            task.ECONFLICT,
		http.StatusInternalServerError: task.EINTERNAL,
	} {
		rt, _ := engineStub(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"message":"the daemon says no"}`)
		})
		_, err := rt.List(ctx(t))
		if task.ErrorCode(err) != want || !strings.Contains(err.Error(), "the daemon says no") {
			t.Errorf("List answered %d: got %v (%s), want %s with the Engine's message", status, err, task.ErrorCode(err), want)
		}
	}
}

// List reads cube's labels by their exact keys: an image's label whose key differs only in case,
// or by a letter that folds into an ASCII one (the Kelvin sign into k), is not taken for cube's
// own, wherever it sorts. And the answer is read to its end, so the connection is used again.
func TestListReadsLabelsByTheirExactKeys(t *testing.T) {
	taskID, other := uuid.New(), uuid.New()
	rt, conns := engineStub(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Query().Get("filters"), "cube.worker=stub") {
			t.Errorf("List's filters: got %q, want this worker's label", r.URL.Query().Get("filters"))
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `[{"Id":"c1","Created":1700000000,"State":"running","Labels":{`+
			`"CUBE.TASK.ID":%[2]q,"CUBE.WORKER":"x","cube.event.id":"e1","cube.task.id":%[1]q,`+
			`"cube.tas\u212a.id":%[2]q,"cube.worker":"stub","ſtub":"ignored"}}]`+"\n", taskID, other)
	})
	for range 2 {
		list, err := rt.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].TaskID != taskID || list[0].EventID != "e1" || list[0].Worker != "stub" || !list[0].Running {
			t.Fatalf("List: got %+v, want container c1 of task %s, event e1, worker stub, running", list, taskID)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("connections for a ping and two Lists: got %d, want 1", n)
	}
}

// A tcp:// Engine is addressed by https when the client talks TLS to it, by http when not.
func TestListAddressesATCPEngineByItsScheme(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost("tcp://127.0.0.1:2376"))
	if err != nil {
		t.Fatal(err)
	}
	for tls, want := range map[bool]string{false: "http://127.0.0.1:2376/v1.41/containers/json", true: "https://127.0.0.1:2376/v1.41/containers/json"} {
		rt := docker.NewWithClient(cli, docker.Options{EngineTLS: tls})
		if got := rt.Endpoint("/v1.41/containers/json"); got != want {
			t.Errorf("EngineTLS %v: got %s, want %s", tls, got, want)
		}
	}
}

// ListTask returns one task's containers only, of this worker's, each as List has it; and, not
// being a list of every container, it makes the spec cache forget none of the others.
func TestListTaskReturnsOneTasksContainers(t *testing.T) {
	rt, _ := newRuntime(t)
	other, _ := newRuntime(t)
	mine, theirs := benchTask(), benchTask()
	id, err := rt.Create(ctx(t), mine)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx(t), theirs); err != nil {
		t.Fatal(err)
	}
	sameTask := mine // the same task ID on another worker of the Engine: not this one's
	sameTask.LastEvent = uuid.NewString()
	if _, err := other.Create(ctx(t), sameTask); err != nil {
		t.Fatal(err)
	}
	if list, err := rt.List(ctx(t)); err != nil || len(list) != 2 || rt.CachedSpecs() != 2 {
		t.Fatalf("List: got %d containers, %d cached, %v; want 2 and 2", len(list), rt.CachedSpecs(), err)
	}
	list, err := rt.ListTask(ctx(t), mine.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || list[0].TaskID != mine.ID || list[0].EventID != mine.LastEvent || !list[0].SpecRead {
		t.Fatalf("ListTask: got %+v, want container %s of task %s, its spec read", list, id, mine.ID)
	}
	if got := rt.CachedSpecs(); got != 2 {
		t.Errorf("cached specs after a ListTask: got %d, want 2", got)
	}
	if list, err := rt.ListTask(ctx(t), uuid.New()); err != nil || len(list) != 0 {
		t.Errorf("ListTask of a task without containers: got %+v, %v; want none", list, err)
	}
}
