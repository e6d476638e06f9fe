package docker_test

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// steps collects what Start reports.
type steps struct {
	mu   sync.Mutex
	list []task.StartStep
}

func (s *steps) add(st task.StartStep) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, st)
}

func (s *steps) types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, st := range s.list {
		if st.Type != "" {
			out = append(out, st.Type)
		}
	}
	return out
}

func (s *steps) lastPull() *task.PullProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.list) - 1; i >= 0; i-- {
		if s.list[i].Pull != nil {
			return s.list[i].Pull
		}
	}
	return nil
}

// uniqueImage builds an image with a layer of its own on top of the echo image, so that a pull
// of it has bytes to download, and removes it when the test ends.
func uniqueImage(t *testing.T) string {
	t.Helper()
	testenv.BuildEchoImage(t)
	tag := "cube-pull-test:" + uuid.NewString()[:8]
	blob := make([]byte, 256<<10)
	rand.Read(blob)
	testenv.BuildDockerfile(t, tag, "FROM "+testenv.EchoImage+"\nCOPY blob /blob\n", map[string][]byte{"blob": blob})
	t.Cleanup(func() { (&testenv.Registry{}).RemoveLocal(t, tag) })
	return tag
}

func TestPullScenarios(t *testing.T) {
	src := uniqueImage(t)
	reg := testenv.StartRegistry(t, false)
	ref := reg.Push(t, src, "cube/echo:v1")
	reg.RemoveLocal(t, src)
	rt, _ := newRuntime(t)

	t.Run("missing image is pulled", func(t *testing.T) {
		reg.RemoveLocal(t, ref)
		var st steps
		tk := echoTask("--listen", ":7777")
		tk.Image = ref
		if _, err := rt.Start(ctx(t), tk, st.add); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(st.types(), ","); got != "Pulling,Pulled,Created,Started" {
			t.Errorf("steps: got %s, want Pulling,Pulled,Created,Started", got)
		}
		p := st.lastPull()
		if p == nil || p.Layers == 0 || p.LayersDone != p.Layers || p.BytesTotal == 0 || p.Bytes != p.BytesTotal {
			t.Errorf("pull progress at the end: got %+v, want every layer and byte done", p)
		}
	})
	t.Run("if-not-present does not pull a present image", func(t *testing.T) {
		var st steps
		tk := echoTask("--listen", ":7777")
		tk.Image = ref
		if _, err := rt.Start(ctx(t), tk, st.add); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(st.types(), ","); got != "Created,Started" {
			t.Errorf("steps: got %s, want Created,Started", got)
		}
	})
	t.Run("always pulls a present image", func(t *testing.T) {
		var st steps
		tk := echoTask("--listen", ":7777")
		tk.Image, tk.PullPolicy = ref, task.PullAlways
		if _, err := rt.Start(ctx(t), tk, st.add); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(st.types(), ","); got != "Pulling,Pulled,Created,Started" {
			t.Errorf("steps: got %s, want Pulling,Pulled,Created,Started", got)
		}
	})
	t.Run("never with a missing image fails", func(t *testing.T) {
		reg.RemoveLocal(t, ref)
		tk := echoTask()
		tk.Image, tk.PullPolicy = ref, task.PullNever
		_, err := rt.Start(ctx(t), tk, nil)
		if err == nil || !strings.Contains(err.Error(), `is not present and PullPolicy is "never"`) {
			t.Fatalf("got %v, want a never-pull error", err)
		}
	})
	t.Run("unknown tag", func(t *testing.T) {
		tk := echoTask()
		tk.Image = reg.Host + "/cube/echo:no-such-tag"
		_, err := rt.Start(ctx(t), tk, nil)
		if err == nil || !strings.Contains(err.Error(), "image pull failed") || !strings.Contains(err.Error(), "no-such-tag") {
			t.Fatalf("got %v, want an image pull failure naming the tag", err)
		}
	})
	t.Run("concurrent starts share one pull", func(t *testing.T) {
		reg.RemoveLocal(t, ref)
		since := time.Now()
		const n = 4
		all := make([]steps, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := echoTask("--listen", ":7777")
				tk.Image = ref
				_, err := rt.Start(ctx(t), tk, all[i].add)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Every waiter that joined while the pull ran heard the same pull; the Engine's own
		// event log shows how many pulls there were.
		pulls := testenv.PullEvents(t, ref, since)
		if pulls != 1 {
			t.Errorf("pulls of %s: got %d, want 1", ref, pulls)
		}
	})
}

func TestPullWithCredentials(t *testing.T) {
	testenv.BuildEchoImage(t)
	reg := testenv.StartRegistry(t, true)
	ref := reg.Push(t, testenv.EchoImage, "private/echo:v1")
	rt, _ := newRuntime(t)

	t.Run("no credentials", func(t *testing.T) {
		tk := echoTask()
		tk.Image = ref
		_, err := rt.Start(ctx(t), tk, nil)
		if err == nil || !strings.Contains(err.Error(), "image pull failed") {
			t.Fatalf("got %v, want an image pull failure", err)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		tk := echoTask()
		tk.Image = ref
		tk.RegistryAuth = &task.RegistryAuth{Username: reg.Username, Password: "wrong-password"}
		_, err := rt.Start(ctx(t), tk, nil)
		if err == nil || !strings.Contains(err.Error(), "image pull failed") {
			t.Fatalf("got %v, want an image pull failure", err)
		}
		if strings.Contains(err.Error(), "wrong-password") {
			t.Fatalf("the error shows the password: %v", err)
		}
	})
	t.Run("task credentials", func(t *testing.T) {
		reg.RemoveLocal(t, ref)
		tk := echoTask("--listen", ":7777")
		tk.Image = ref
		tk.RegistryAuth = &task.RegistryAuth{Username: reg.Username, Password: reg.Password}
		if _, err := rt.Start(ctx(t), tk, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("docker config credentials", func(t *testing.T) {
		reg.RemoveLocal(t, ref)
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
		cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + auth + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		rt2, _ := newRuntimeWith(t, docker.Options{DockerConfig: filepath.Join(dir, "config.json")})
		tk := echoTask("--listen", ":7777")
		tk.Image = ref
		if _, err := rt2.Start(ctx(t), tk, nil); err != nil {
			t.Fatal(err)
		}
	})
}
