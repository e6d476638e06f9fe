package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
)

// List returns every container labelled with task.LabelTaskID, running or not, with SpecRead
// and SpecRestartCount and without Spec (Inspect fills it). A container's spec label is decoded
// when List first sees the container, and what it says is kept for the Lists after (see
// specCache).
//
// It reads the Engine's answer one container at a time and keeps only what a task.Container
// holds: the SDK's ContainerList decodes the whole answer at once into a Summary per container
// (ports, mounts, networks, every label), ~9 KB of heap per container that the collector counted
// as live whenever a reconcile's list was under way at a collection, and so doubled into its
// goal. A spec label is copied out of the answer only for a container not yet in the cache.
func (r *Runtime) List(ctx context.Context) ([]task.Container, error) {
	return r.list(ctx, r.labelFilters(), true)
}

// ListTask returns List's containers of task id: the Engine picks them out by their label, so a
// start that failed, looking for what an earlier attempt made, costs the Engine and the worker a
// few containers, not the node's thousand.
func (r *Runtime) ListTask(ctx context.Context, id uuid.UUID) ([]task.Container, error) {
	f := r.labelFilters()
	f.Add("label", task.LabelTaskID+"="+id.String())
	return r.list(ctx, f, false)
}

// list is List of the containers filters f selects; whole says that f selects every one the
// Runtime owns, so that the spec cache may forget those not in the answer.
func (r *Runtime) list(ctx context.Context, f filters.Args, whole bool) ([]task.Container, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	body, err := r.getList(ctx, f)
	if err != nil {
		return nil, convert(err, "list containers")
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	if err := expectDelim(dec, '['); err != nil {
		return nil, convert(err, "list containers")
	}
	// The cache's lock is taken per container, not across the answer: Lists run side by side
	// (the reconcile's, a start's look for an earlier attempt's container), each as fast as
	// the Engine answers it.
	gen := r.specs.begin()
	var out []task.Container
	var e listed
	for dec.More() {
		e = listed{Labels: listedLabels{Spec: e.Labels.Spec[:0]}} // the spec's buffer is reused
		if err := dec.Decode(&e); err != nil {
			return nil, convert(fmt.Errorf("decode: %w", err), "list containers")
		}
		c := task.Container{Running: e.State == container.StateRunning || e.State == container.StatePaused,
			Paused: e.State == container.StatePaused, Created: time.Unix(e.Created, 0), EventID: e.Labels.EventID,
			Worker: e.Labels.Worker}
		c.TaskID, _ = uuid.Parse(e.Labels.TaskID)
		c.ID = e.ID
		c.SpecRead, c.SpecRestartCount = r.specs.get(gen, e.ID, e.Labels.Spec, c.TaskID)
		out = append(out, c)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, convert(err, "list containers")
	}
	// What is left of the body (a newline) is read, so that the connection goes back to the
	// client's pool, as the SDK's own calls leave it.
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 512))
	// Only a whole answer of every container says which are gone.
	if whole {
		r.specs.prune(gen)
	}
	return out, nil
}

// listed is what List reads of one container in the Engine's answer; the decoder skips the rest.
type listed struct {
	ID      string `json:"Id"`
	Created int64
	State   container.ContainerState
	Labels  listedLabels
}

// listedLabels are the labels List reads, by their exact keys: encoding/json would match a
// struct field's key ignoring case (and folding such letters as U+212A, the Kelvin sign, into
// k), and so take an image's label "cube.tas\u212a.id" for cube's own.
type listedLabels struct {
	TaskID  string    // task.LabelTaskID
	EventID string    // task.LabelEventID
	Worker  string    // LabelWorker
	Spec    rawString // task.LabelSpec, as it stands in the answer, still quoted
}

func (l *listedLabels) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var into any
		switch key {
		case task.LabelTaskID:
			into = &l.TaskID
		case task.LabelEventID:
			into = &l.EventID
		case LabelWorker:
			into = &l.Worker
		case task.LabelSpec:
			into = &l.Spec
		default:
			into = &skipped{}
		}
		if err := dec.Decode(into); err != nil {
			return err
		}
	}
	return expectDelim(dec, '}')
}

// skipped is a JSON value read and not kept.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// rawString keeps a JSON value as it stands, into its own buffer, which a decode into the same
// value reuses.
type rawString []byte

func (s *rawString) UnmarshalJSON(b []byte) error {
	*s = append((*s)[:0], b...)
	return nil
}

// expectDelim reads the next token of dec, which must be delim.
func expectDelim(dec *json.Decoder, delim json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != delim {
		return fmt.Errorf("decode: got %v, want %v", tok, delim)
	}
	return nil
}

// getList asks the Engine for the containers f selects and returns the answer's body, which the
// caller reads and closes. It goes through the SDK client's own HTTP client (its transport,
// dialer and TLS settings) at the API version the client negotiated, since the SDK has no call
// that hands back the body unread.
func (r *Runtime) getList(ctx context.Context, f filters.Args) (io.ReadCloser, error) {
	version, err := r.negotiate(ctx)
	if err != nil {
		return nil, err
	}
	fs, err := filters.ToJSON(f)
	if err != nil {
		return nil, err
	}
	req, err := r.request(ctx, "/v"+version+"/containers/json", url.Values{"all": {"1"}, "filters": {fs}})
	if err != nil {
		return nil, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, engineError(resp)
	}
	return resp.Body, nil
}

// negotiate returns the API version the client speaks with the Engine, negotiating it on the
// first call (a ping) as the SDK's own calls do.
func (r *Runtime) negotiate(ctx context.Context) (string, error) {
	r.api.mu.Lock()
	defer r.api.mu.Unlock()
	if r.api.version != "" {
		return r.api.version, nil
	}
	ping, err := r.cli.Ping(ctx)
	if err != nil {
		return "", err
	}
	// Once negotiated (here or by an earlier call), the SDK never changes the version again, so
	// reading it after is not a race with its lazy negotiation.
	r.cli.NegotiateAPIVersionPing(ping)
	r.api.version = strings.TrimPrefix(r.cli.ClientVersion(), "v")
	return r.api.version, nil
}

// apiState is what List needs to make its own request to the Engine.
type apiState struct {
	mu      sync.Mutex
	version string // negotiated; "" until the first List
}

// request makes a GET of path on the Engine, addressed as the SDK's own requests are (its
// buildRequest), so that it shares their connections: the URL's host is the Engine's address
// (a socket's path, which the client's dialer uses) and, for a socket, the Host header a dummy
// name; the scheme is https when the client talks TLS to a tcp:// host (Options.EngineTLS) or
// the host says https, http otherwise.
func (r *Runtime) request(ctx context.Context, p string, query url.Values) (*http.Request, error) {
	host, err := client.ParseHostURL(r.cli.DaemonHost())
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+client.DummyHost, nil)
	if err != nil {
		return nil, err
	}
	req.URL = &url.URL{Scheme: "http", Host: host.Host, Path: path.Join(host.Path, p), RawQuery: query.Encode()}
	req.Host = "" // the URL's
	switch host.Scheme {
	case "unix", "npipe":
		req.Host = client.DummyHost
	case "https":
		req.URL.Scheme = "https"
	default:
		if r.opts.EngineTLS {
			req.URL.Scheme = "https"
		}
	}
	return req, nil
}

// engineError is the error of an answer that is not a success: the Engine's own message, of the
// kind its status says as the SDK's calls sort it (errhttp.ToNative), so that convert makes of it
// what it makes of theirs (a 503 is EUNAVAILABLE, and a start waits for the Engine).
func engineError(resp *http.Response) error {
	var msg struct{ Message string }
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &msg) != nil || msg.Message == "" {
		msg.Message = strings.TrimSpace(string(b))
	}
	return &statusError{msg: fmt.Sprintf("%s (%s)", msg.Message, resp.Status), kind: errhttp.ToNative(resp.StatusCode)}
}

// statusError is an Engine's answer of an error status.
type statusError struct {
	msg  string
	kind error // an errdefs error
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.kind }

// specCache keeps what the spec label of each container List saw says of the start that made
// it (whether it is readable and the task's, and its RestartCount), so that a reconcile does not
// decode every container's spec again: a container's labels never change. It keeps neither the
// label nor the decoded task (~1.5 KB and ~1 KB a container): no caller of List reads more of
// either, and recovery's rebuild of an unknown task, which needs the whole spec, inspects the
// container anyway.
type specCache struct {
	mu      sync.Mutex
	gen     uint64                // bumped by every List
	decoded int                   // spec labels decoded so far
	byID    map[string]cachedSpec // by container ID
}

type cachedSpec struct {
	read     bool   // the label decoded, and is the task's
	restarts int    // the spec's RestartCount, when read
	gen      uint64 // the latest List that saw the container
}

// begin starts a List: it returns the List's generation, which its gets and its prune are
// given.
func (c *specCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	return c.gen
}

// get returns whether the spec label of container id is readable and its task's, and the spec's
// RestartCount, decoding label (a JSON string as it stands in the Engine's answer) when the
// container is not cached: the Engine never changes a container's labels, and a container ID is
// never used again. gen is the List's that saw it.
func (c *specCache) get(gen uint64, id string, label rawString, taskID uuid.UUID) (read bool, restarts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = make(map[string]cachedSpec)
	}
	if e, ok := c.byID[id]; ok {
		e.gen = max(e.gen, gen)
		c.byID[id] = e
		return e.read, e.restarts
	}
	var s string
	if len(label) > 0 && json.Unmarshal(label, &s) != nil {
		s = ""
	}
	c.decoded++
	e := cachedSpec{gen: gen}
	if spec := decodeSpec(s, taskID); spec != nil {
		e.read, e.restarts = true, spec.RestartCount
	}
	c.byID[id] = e
	return e.read, e.restarts
}

// prune forgets the containers that neither the List of generation gen, whose whole answer was
// read, nor a later one saw: they are gone. (Of Lists that overlap, the Engine may have answered
// a later one first; a container it made in between is then forgotten and decoded again.)
func (c *specCache) prune(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.byID {
		if e.gen < gen {
			delete(c.byID, id)
		}
	}
}
