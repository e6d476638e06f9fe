package docker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"
)

// pull is one image pull that any number of starts wait for. Each waiter hears its progress
// while it waits, and never after.
type pull struct {
	done chan struct{}
	err  error

	mu        sync.Mutex
	observers map[int]func(task.StartStep)
	next      int
}

func (p *pull) observe(fn func(task.StartStep)) (stop func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.next
	p.next++
	p.observers[id] = fn
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.observers, id)
	}
}

func (p *pull) tell(step task.StartStep) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fn := range p.observers {
		fn(step)
	}
}

// pullImage pulls the task's image. Concurrent pulls of one image with the same credentials are
// done once, and every caller hears of its progress.
func (r *Runtime) pullImage(ctx context.Context, t task.Task, progress func(task.StartStep)) error {
	ref := t.Image
	auth, who, err := r.registryAuth(ref, t.RegistryAuth)
	if err != nil {
		return err
	}
	key := ref + "\x00" + who
	r.pullMu.Lock()
	p, ok := r.pulls[key]
	if !ok {
		p = &pull{done: make(chan struct{}), observers: make(map[int]func(task.StartStep))}
		r.pulls[key] = p
	}
	// Observe before the pull begins, so that its first steps reach the caller that starts it.
	stop := p.observe(progress)
	if !ok {
		go func() {
			// The pull belongs to every waiter, so it outlives the first caller's context.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.PullTimeout)
			defer cancel()
			p.err = r.pull(pctx, ref, auth, p)
			r.pullMu.Lock()
			delete(r.pulls, key)
			r.pullMu.Unlock()
			close(p.done)
		}()
	}
	r.pullMu.Unlock()
	defer stop()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return &task.Error{Code: task.EUNAVAILABLE, Message: fmt.Sprintf("image pull failed: %s: gave up waiting: %v", ref, ctx.Err())}
	}
}

// pull pulls ref, telling p's observers of its progress, and aborts when the Engine reports no
// progress for the inactivity timeout.
func (r *Runtime) pull(ctx context.Context, ref, auth string, p *pull) error {
	// How long a pull takes, and when its progress was last told, are measured on the real
	// clock (Options.Now is for the times the runtime decides with): they pace what observers
	// see, and a pull's length is a latency.
	started := time.Now()
	p.tell(task.StartStep{Type: task.RecordPulling, Message: "image " + ref})
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Armed before the request: a daemon that hangs before it answers is inactivity too.
	idle := time.AfterFunc(r.opts.PullInactivity, func() {
		cancel(fmt.Errorf("%w: no progress for %v", errPullStalled, r.opts.PullInactivity))
	})
	defer idle.Stop()
	rc, err := r.cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return r.pullError(ref, withCause(ctx, err))
	}
	defer rc.Close()
	var prog pullProgress
	lastTold := time.Time{}
	dec := json.NewDecoder(rc)
	for {
		var m jsonmessage.JSONMessage
		err := dec.Decode(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return r.pullError(ref, withCause(ctx, err))
		}
		idle.Reset(r.opts.PullInactivity)
		if m.Error != nil {
			return r.pullError(ref, errors.New(m.Error.Message))
		}
		if prog.update(m) && time.Since(lastTold) >= time.Second {
			lastTold = time.Now()
			snap := prog.snapshot()
			p.tell(task.StartStep{Pull: &snap})
		}
	}
	snap := prog.snapshot()
	p.tell(task.StartStep{Type: task.RecordPulled, Pull: &snap,
		Message: fmt.Sprintf("image %s in %s", ref, time.Since(started).Round(time.Millisecond))})
	return nil
}

// pullProgress adds up the Engine's per-layer pull messages.
type pullProgress struct {
	layers map[string]*layerProgress
}

type layerProgress struct {
	current, total int64
	done           bool
}

// update takes one pull message and reports whether it changed the figures.
func (p *pullProgress) update(m jsonmessage.JSONMessage) bool {
	if m.ID == "" || strings.HasPrefix(m.Status, "Pulling from") || strings.HasPrefix(m.Status, "Digest:") || strings.HasPrefix(m.Status, "Status:") {
		return false
	}
	if p.layers == nil {
		p.layers = make(map[string]*layerProgress)
	}
	l, ok := p.layers[m.ID]
	if !ok {
		l = &layerProgress{}
		p.layers[m.ID] = l
	}
	switch {
	case m.Status == "Downloading" && m.Progress != nil:
		l.current, l.total = m.Progress.Current, max(l.total, m.Progress.Total)
	case m.Status == "Download complete" || m.Status == "Verifying Checksum":
		if l.total > 0 {
			l.current = l.total
		}
	case m.Status == "Pull complete" || m.Status == "Already exists":
		l.done = true
		if l.total > 0 {
			l.current = l.total
		}
	}
	return true
}

func (p *pullProgress) snapshot() task.PullProgress {
	var s task.PullProgress
	for _, l := range p.layers {
		s.Layers++
		if l.done {
			s.LayersDone++
		}
		s.Bytes += l.current
		s.BytesTotal += l.total
	}
	return s
}

// errPullStalled is the cause of a pull that made no progress for the inactivity timeout.
var errPullStalled = errors.New("pull stalled")

// withCause returns why ctx was cancelled, when it was, instead of err.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// pullError says why a pull failed. A runtime that does not answer is EUNAVAILABLE (the task
// waits for it); the registry's refusals fail the task. A pull that stalled or ran out of time
// is the runtime's fault when the runtime does not answer a ping either, else the registry's.
func (r *Runtime) pullError(ref string, err error) error {
	kind := task.ErrorCode(convert(err, ""))
	switch {
	case errors.Is(err, errPullStalled) || errors.Is(err, context.DeadlineExceeded):
		kind = task.EINTERNAL
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if r.Ping(ctx) != nil {
			kind = task.EUNAVAILABLE
		}
		cancel()
	case kind == task.EUNAVAILABLE:
	default:
		kind = task.ENOTFOUND
	}
	msg := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	return &task.Error{Code: kind, Message: fmt.Sprintf("image pull failed: %s: %s", ref, msg)}
}

// registryAuth returns the encoded credentials for pulling ref (the task's own, or else those
// the docker config file holds for ref's registry; "" for none) and a digest that tells
// credentials apart without holding them. Credentials never reach a log or an error.
func (r *Runtime) registryAuth(ref string, own *task.RegistryAuth) (encoded, who string, err error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", "", &task.Error{Code: task.EINVALID, Message: fmt.Sprintf("Task.Image: %q: %v", ref, err)}
	}
	domain := reference.Domain(named)
	cfg := registry.AuthConfig{ServerAddress: domain}
	switch {
	case own != nil:
		cfg.Username, cfg.Password = own.Username, own.Password
	default:
		user, pass, ok := configAuth(r.opts.DockerConfig, domain)
		if !ok {
			return "", "", nil
		}
		cfg.Username, cfg.Password = user, pass
	}
	encoded, err = registry.EncodeAuthConfig(cfg)
	if err != nil {
		return "", "", &task.Error{Code: task.EINVALID, Message: "Task.RegistryAuth: cannot be encoded"}
	}
	sum := sha256.Sum256([]byte(cfg.Username + "\x00" + cfg.Password))
	return encoded, hex.EncodeToString(sum[:8]), nil
}

// configAuth reads the credentials for domain from a docker CLI config file's "auths". Docker
// Hub's entry goes by its historical key. Credential helpers are not consulted.
func configAuth(path, domain string) (user, pass string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", false
	}
	var cfg struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if json.Unmarshal(b, &cfg) != nil {
		return "", "", false
	}
	keys := []string{domain, "https://" + domain, "http://" + domain, "https://" + domain + "/v1/", "https://" + domain + "/v2/"}
	if domain == "docker.io" {
		keys = append(keys, "https://index.docker.io/v1/", "index.docker.io")
	}
	for _, k := range keys {
		a, found := cfg.Auths[k]
		if !found {
			continue
		}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return "", "", false
			}
			u, p, ok := strings.Cut(string(raw), ":")
			return u, p, ok
		}
		if a.Username != "" {
			return a.Username, a.Password, true
		}
	}
	return "", "", false
}

func defaultDockerConfig() string {
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return filepath.Join(dir, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}
