package docker

// CachedSpecs returns how many containers' decoded spec labels r keeps.
func (r *Runtime) CachedSpecs() int {
	r.specs.mu.Lock()
	defer r.specs.mu.Unlock()
	return len(r.specs.byID)
}
