package docker

import (
	"context"

	"github.com/cube-orchestrator/cube/task"
)

// DecodedSpecs returns how many spec labels r's List has decoded.
func (r *Runtime) DecodedSpecs() int {
	r.specs.mu.Lock()
	defer r.specs.mu.Unlock()
	return r.specs.decoded
}

// CachedSpecs returns how many containers' decoded spec labels r keeps.
func (r *Runtime) CachedSpecs() int {
	r.specs.mu.Lock()
	defer r.specs.mu.Unlock()
	return len(r.specs.byID)
}

// Create makes the container Start would make for t, labelled for r's worker, without starting
// it, and returns its ID: a listed container that costs the Engine no process.
func (r *Runtime) Create(ctx context.Context, t task.Task) (string, error) {
	cfg, hostCfg, err := containerConfig(t, r.opts.StopGrace)
	if err != nil {
		return "", err
	}
	if r.opts.Worker != "" {
		cfg.Labels[LabelWorker] = r.opts.Worker
	}
	resp, err := r.create(ctx, cfg, hostCfg, ContainerName(t))
	return resp.ID, err
}

// Endpoint is the URL List asks the Engine at for path.
func (r *Runtime) Endpoint(path string) string {
	req, err := r.request(context.Background(), path, nil)
	if err != nil {
		return err.Error()
	}
	return req.URL.String()
}
