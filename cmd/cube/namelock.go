package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/internal/namelock"
)

// engineIdentifier is the part of the Docker runtime the name lock needs.
type engineIdentifier interface {
	EngineID(ctx context.Context) (string, error)
}

// errEngineUnknown wraps a failure to learn the Engine's ID: the Engine did not answer, and the
// name is claimed once it does.
type errEngineUnknown struct{ err error }

func (e errEngineUnknown) Error() string { return e.err.Error() }
func (e errEngineUnknown) Unwrap() error { return e.err }

// claimName takes the lock on the worker's name for the Engine rt drives. It returns a nil
// lock and nil error where the system has no name locks (logged as a warning), an
// errEngineUnknown when the Engine does not tell its ID, and otherwise the lock or why it
// cannot be had: another worker holds the name (*namelock.HeldError), or the lock directory is
// unusable.
func claimName(ctx context.Context, rt engineIdentifier, cfg workerConfig, log *slog.Logger) (*namelock.Lock, error) {
	id, err := rt.EngineID(ctx)
	if err != nil {
		return nil, errEngineUnknown{err}
	}
	lock, err := namelock.Acquire(cfg.lockDir, id, cfg.name, time.Now())
	switch {
	case errors.Is(err, namelock.ErrUnsupported):
		log.Warn("nothing keeps a second worker from using this name on this Docker Engine", "err", err)
		return nil, nil
	case err != nil:
		var held *namelock.HeldError
		if errors.As(err, &held) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (set --lock-dir)", err)
	}
	log.Info("worker name claimed on this Docker Engine", "engine_id", id, "lock", lock.Path())
	return lock, nil
}

// claimNameWhenUp claims the name as claimName does, asking the Engine for its ID again, with
// back-off, until it answers or ctx is done (then it returns ctx's error). It tells down why
// each ask failed.
func claimNameWhenUp(ctx context.Context, rt engineIdentifier, cfg workerConfig, log *slog.Logger, down func(error)) (*namelock.Lock, error) {
	backoff := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lock, err := claimName(cctx, rt, cfg, log)
		cancel()
		var unknown errEngineUnknown
		if !errors.As(err, &unknown) {
			return lock, err
		}
		log.Debug("the worker name waits for the Docker Engine to tell its ID", "err", err)
		down(unknown.err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// nameClaim holds the name's lock, if any, until it is released: once Run has returned, or
// when the daemon returns, whichever comes first.
type nameClaim struct {
	mu   sync.Mutex
	lock *namelock.Lock
}

func (c *nameClaim) set(l *namelock.Lock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lock = l
}

func (c *nameClaim) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lock != nil {
		c.lock.Release()
		c.lock = nil
	}
}
