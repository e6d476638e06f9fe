package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

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
	ctx, cancel := r.call(ctx)
	defer cancel()
	body, err := r.getList(ctx)
	if err != nil {
		return nil, convert(err, "list containers")
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	if err := expectDelim(dec, '['); err != nil {
		return nil, convert(err, "list containers")
	}
	var out []task.Container
	r.specs.mu.Lock()
	defer r.specs.mu.Unlock()
	r.specs.gen++
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
		c.SpecRead, c.SpecRestartCount = r.specs.get(e.ID, e.Labels.Spec, c.TaskID)
		out = append(out, c)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, convert(err, "list containers")
	}
	// Only a whole answer says which containers are gone.
	r.specs.prune()
	return out, nil
}

// listed is what List reads of one container in the Engine's answer; the decoder skips the rest.
type listed struct {
	ID      string `json:"Id"`
	Created int64
	State   container.ContainerState
	Labels  listedLabels
}

// listedLabels are the labels List reads. The decoder takes a key that matches a field's name
// exactly over one that differs only in case, and the Engine writes a container's labels sorted
// by key, so a label spelled with other capitals never hides cube's own (those sort before it).
type listedLabels struct {
	TaskID  string    `json:"cube.task.id"`
	EventID string    `json:"cube.event.id"`
	Worker  string    `json:"cube.worker"`
	Spec    rawString `json:"cube.task.spec"` // the spec label as it stands in the answer, still quoted
}

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

// getList asks the Engine for the labelled containers and returns the answer's body, which the
// caller reads and closes. It goes through the SDK client's own HTTP client (its transport,
// dialer and TLS settings) at the API version the client negotiated, since the SDK has no call
// that hands back the body unread.
func (r *Runtime) getList(ctx context.Context) (io.ReadCloser, error) {
	version, err := r.negotiate(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filters.ToJSON(r.labelFilters())
	if err != nil {
		return nil, err
	}
	u := r.endpoint("/v"+version+"/containers/json", url.Values{"all": {"1"}, "filters": {f}})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
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

// endpoint returns the URL of path on the Engine, as the SDK addresses it: a local socket by a
// dummy host name (its dialer ignores the address), TCP by https when the client was given TLS
// settings from the environment (as client.FromEnv reads them) or the host says https.
func (r *Runtime) endpoint(p string, query url.Values) string {
	u := url.URL{Scheme: "http", Host: client.DummyHost, Path: p, RawQuery: query.Encode()}
	host, err := client.ParseHostURL(r.cli.DaemonHost())
	if err != nil {
		return u.String()
	}
	u.Path = path.Join(host.Path, p)
	switch host.Scheme {
	case "unix", "npipe":
	case "https":
		u.Scheme, u.Host = "https", host.Host
	default:
		u.Host = host.Host
		if os.Getenv("DOCKER_CERT_PATH") != "" || os.Getenv("DOCKER_TLS_VERIFY") != "" {
			u.Scheme = "https"
		}
	}
	return u.String()
}

// engineError is the error of an answer that is not a success: the Engine's own message, of the
// kind its status says.
func engineError(resp *http.Response) error {
	var msg struct{ Message string }
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &msg) != nil || msg.Message == "" {
		msg.Message = strings.TrimSpace(string(b))
	}
	code := task.EINTERNAL
	switch resp.StatusCode {
	case http.StatusBadRequest:
		code = task.EINVALID
	case http.StatusNotFound:
		code = task.ENOTFOUND
	case http.StatusConflict:
		code = task.ECONFLICT
	case http.StatusServiceUnavailable:
		code = task.EUNAVAILABLE
	}
	return &task.Error{Code: code, Message: fmt.Sprintf("%s (%s)", msg.Message, resp.Status)}
}

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
	gen      uint64 // the last List that saw the container
}

// get returns whether the spec label of container id is readable and its task's, and the spec's
// RestartCount, decoding label (a JSON string as it stands in the Engine's answer) when the
// container is not cached: the Engine never changes a container's labels, and a container ID is
// never used again. Callers hold c.mu.
func (c *specCache) get(id string, label rawString, taskID uuid.UUID) (read bool, restarts int) {
	if c.byID == nil {
		c.byID = make(map[string]cachedSpec)
	}
	if e, ok := c.byID[id]; ok {
		e.gen = c.gen
		c.byID[id] = e
		return e.read, e.restarts
	}
	var s string
	if len(label) > 0 && json.Unmarshal(label, &s) != nil {
		s = ""
	}
	c.decoded++
	e := cachedSpec{gen: c.gen}
	if spec := decodeSpec(s, taskID); spec != nil {
		e.read, e.restarts = true, spec.RestartCount
	}
	c.byID[id] = e
	return e.read, e.restarts
}

// prune forgets the containers the last List did not see: they are gone. Callers hold c.mu.
func (c *specCache) prune() {
	for id, e := range c.byID {
		if e.gen != c.gen {
			delete(c.byID, id)
		}
	}
}
