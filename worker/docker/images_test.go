package docker_test

import (
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/docker/api/types/image"
)

// imageRuntime returns a runtime under a worker name of its own that records pulled images in
// state, on the clock now (time.Now when nil).
func imageRuntime(t *testing.T, state string, now func() time.Time) (*docker.Runtime, string) {
	t.Helper()
	return newRuntimeWith(t, docker.Options{ImageState: state, Now: now})
}

func imagePresent(t *testing.T, ref string) bool {
	t.Helper()
	_, err := testenv.Docker(t).ImageInspect(ctx(t), ref)
	return err == nil
}

// An image the worker pulled from the registry is kept while a container of it exists and
// while it was used within the keep time, and removed after, also by a runtime started again on
// the same record (a worker restart). Images it did not pull, the local echo image and one that
// was present before a pull of PullPolicy always, are never touched.
func TestCollectImages(t *testing.T) {
	src := uniqueImage(t)
	reg := testenv.StartRegistry(t, false)
	ref := reg.Push(t, src, "cube/gc:v1")
	other := reg.Push(t, src, "cube/gc-present:v1")
	reg.RemoveLocal(t, src)
	state := filepath.Join(t.TempDir(), "images.json")
	rt, _ := imageRuntime(t, state, nil)

	tk := echoTask("--listen", ":7777")
	tk.Image = ref
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.CollectImages(ctx(t), time.Nanosecond); err != nil || len(removed) != 0 || !imagePresent(t, ref) {
		t.Fatalf("with a container of it: removed %v (err %v), present %v; want it kept", removed, err, imagePresent(t, ref))
	}
	if err := rt.Remove(ctx(t), c.ID); err != nil {
		t.Fatal(err)
	}
	if removed, err := rt.CollectImages(ctx(t), time.Hour); err != nil || len(removed) != 0 || !imagePresent(t, ref) {
		t.Fatalf("used within the hour: removed %v (err %v); want it kept", removed, err)
	}

	// A present image pulled again with PullPolicy always, and the local echo image, are not the
	// worker's.
	rc, err := testenv.Docker(t).ImagePull(ctx(t), other, image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc) // the pull is done when its stream ends
	rc.Close()
	if err != nil || !imagePresent(t, other) {
		t.Fatalf("docker pull %s: %v", other, err)
	}
	for _, img := range []string{other, testenv.EchoImage} {
		tk := echoTask("--listen", ":7777")
		tk.Image, tk.PullPolicy = img, task.PullAlways
		if img == testenv.EchoImage {
			tk.PullPolicy = ""
		}
		c, err := rt.Start(ctx(t), tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Remove(ctx(t), c.ID); err != nil {
			t.Fatal(err)
		}
	}

	// The worker starts again on the same record, two hours on by its clock: the image has not
	// been used for longer than the keep time.
	rt2, _ := imageRuntime(t, state, func() time.Time { return time.Now().Add(2 * time.Hour) })
	removed, err := rt2.CollectImages(ctx(t), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{ref}) || imagePresent(t, ref) {
		t.Errorf("after the restart: removed %v, %s present %v; want it removed", removed, ref, imagePresent(t, ref))
	}
	for _, img := range []string{other, testenv.EchoImage} {
		if !imagePresent(t, img) {
			t.Errorf("%s was removed; the worker did not pull it", img)
		}
	}
	if removed, err := rt2.CollectImages(ctx(t), time.Hour); err != nil || len(removed) != 0 {
		t.Errorf("a second pass: removed %v (err %v), want nothing", removed, err)
	}
}
