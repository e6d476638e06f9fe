package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
)

// pulledImage is an image this worker pulled, and when a task of it last used it.
type pulledImage struct {
	Ref      string    // the reference it was pulled as, which is what is removed
	ID       string    // the image's ID when it was pulled: a tag that now names another image is left alone
	LastUsed time.Time // the last start of a container from it, or the last time one of the worker's containers had it
}

// images is the record of the images this worker pulled, kept in a file when it has one.
type images struct {
	path   string                  // "" keeps the record in memory
	byRef  map[string]*pulledImage // guarded by Runtime.imgMu
	loaded error                   // why the file could not be read, if it could not
}

func loadImages(path string) images {
	im := images{path: path, byRef: make(map[string]*pulledImage)}
	if path == "" {
		return im
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return im
	}
	var list []pulledImage
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	if err != nil {
		im.loaded = fmt.Errorf("read the record of pulled images %s: %w", path, err)
		return im
	}
	for i := range list {
		im.byRef[list[i].Ref] = &list[i]
	}
	return im
}

// save writes the record to its file, atomically (a crash leaves the old record or the new).
func (im *images) save() error {
	if im.path == "" {
		return nil
	}
	list := make([]pulledImage, 0, len(im.byRef))
	for _, p := range im.byRef {
		list = append(list, *p)
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	tmp := im.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write the record of pulled images: %w", err)
	}
	if err := os.Rename(tmp, im.path); err != nil {
		return fmt.Errorf("write the record of pulled images: %w", err)
	}
	return nil
}

// imageID returns the ID of the local image ref, or "" when there is none.
func (r *Runtime) imageID(ctx context.Context, ref string) (string, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	ins, err := r.cli.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", convert(err, "inspect image")
	}
	return ins.ID, nil
}

// pulled records that this worker pulled ref, which was not present before.
func (r *Runtime) pulled(ctx context.Context, ref string) {
	id, err := r.imageID(ctx, ref)
	if err != nil || id == "" {
		return // not recorded: it is never removed, which is the safe way to be wrong
	}
	r.imgMu.Lock()
	defer r.imgMu.Unlock()
	r.images.byRef[ref] = &pulledImage{Ref: ref, ID: id, LastUsed: r.opts.Now()}
	if err := r.images.save(); err != nil {
		r.log().Warn("cannot keep the record of a pulled image", "image", ref, "err", err)
	}
}

// pulledBefore reports whether the record holds ref.
func (r *Runtime) pulledBefore(ref string) bool {
	r.imgMu.Lock()
	defer r.imgMu.Unlock()
	_, ok := r.images.byRef[ref]
	return ok
}

// used records that a container was started from ref, if the worker pulled it.
func (r *Runtime) used(ref string) {
	r.imgMu.Lock()
	defer r.imgMu.Unlock()
	p, ok := r.images.byRef[ref]
	if !ok {
		return
	}
	p.LastUsed = r.opts.Now()
	if err := r.images.save(); err != nil {
		r.log().Warn("cannot keep the record of a pulled image", "image", ref, "err", err)
	}
}

func (r *Runtime) log() *slog.Logger {
	if r.opts.Logger != nil {
		return r.opts.Logger
	}
	return slog.Default()
}

// CollectImages removes the images this worker pulled that none of its containers has used for
// keep: an image one of its containers (running or not) was made from counts as used now.
// Images it did not pull are never touched, nor is a tag that now names another image than the
// one pulled; an image another container uses stays (the Engine refuses, and it is tried again
// later). It returns the references it removed, and the first error.
func (r *Runtime) CollectImages(ctx context.Context, keep time.Duration) ([]string, error) {
	r.imgMu.Lock()
	if len(r.images.byRef) == 0 {
		r.imgMu.Unlock()
		return nil, nil
	}
	r.imgMu.Unlock()
	lctx, cancel := r.call(ctx)
	list, err := r.cli.ContainerList(lctx, container.ListOptions{All: true, Filters: r.labelFilters()})
	cancel()
	if err != nil {
		return nil, convert(err, "list containers")
	}
	inUse := make(map[string]bool)
	for _, s := range list {
		inUse[s.ImageID] = true
	}
	now := r.opts.Now()
	var due []pulledImage
	r.imgMu.Lock()
	for _, p := range r.images.byRef {
		if inUse[p.ID] {
			p.LastUsed = now
		} else if now.Sub(p.LastUsed) >= keep {
			due = append(due, *p)
		}
	}
	saveErr := r.images.save()
	r.imgMu.Unlock()

	var removed []string
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	fail(saveErr)
	for _, p := range due {
		id, err := r.imageID(ctx, p.Ref)
		if err != nil {
			fail(err)
			continue
		}
		if id == p.ID {
			rctx, cancel := r.call(ctx)
			_, err = r.cli.ImageRemove(rctx, p.Ref, image.RemoveOptions{PruneChildren: true})
			cancel()
			if err != nil && !cerrdefs.IsNotFound(err) {
				fail(convert(err, "remove image "+p.Ref))
				continue // in use, say by a container of someone else: kept, and tried again later
			}
			removed = append(removed, p.Ref)
		}
		// Gone, removed, or the tag names another image now: no longer this worker's.
		r.imgMu.Lock()
		if cur, ok := r.images.byRef[p.Ref]; ok && cur.ID == p.ID && !cur.LastUsed.After(p.LastUsed) {
			delete(r.images.byRef, p.Ref)
		}
		fail(r.images.save())
		r.imgMu.Unlock()
	}
	return removed, firstErr
}

// RunImageGC calls CollectImages every interval until ctx is done, logging what it removes.
func (r *Runtime) RunImageGC(ctx context.Context, every, keep time.Duration) {
	if r.images.loaded != nil {
		r.log().Warn("pulled images recorded before are not known; they are never removed", "err", r.images.loaded)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		removed, err := r.CollectImages(ctx, keep)
		for _, ref := range removed {
			r.log().Info("removed an image this worker pulled and no task used", "image", ref, "unused_for_more_than", keep)
		}
		if err != nil && ctx.Err() == nil {
			r.log().Warn("image clean-up", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ImageStatePath is where a worker with a data dir keeps its record of pulled images.
func ImageStatePath(dataDir string) string { return filepath.Join(dataDir, "images.json") }
