package testenv

import (
	"bytes"
	"context"
	"fmt"
	cerrdefs "github.com/containerd/errdefs"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"golang.org/x/crypto/bcrypt"
)

// Registry is a real image registry (Debian's docker-registry package) serving on 127.0.0.1,
// started for one test. The Docker Engine pulls from it over plain HTTP, as it allows for
// loopback registries.
type Registry struct {
	Host     string // "127.0.0.1:PORT"
	Username string // set when the registry requires basic auth
	Password string
}

// StartRegistry starts a registry with its storage in a temporary folder, with htpasswd basic
// auth (a bcrypt hash, which the registry requires) when withAuth is set, and stops it when the
// test ends. It fails the test when docker-registry is not installed (`make test` installs it:
// `apt-get install docker-registry`).
func StartRegistry(tb testing.TB, withAuth bool) *Registry {
	tb.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		tb.Fatalf("testenv: docker-registry is not installed (apt-get install docker-registry): %v", err)
	}
	dir := tb.TempDir()
	port := FreePort(tb)
	reg := &Registry{Host: "127.0.0.1:" + port}
	auth := ""
	if withAuth {
		reg.Username, reg.Password = "cube", "s3cret-"+strconv.Itoa(os.Getpid())
		hash, err := bcrypt.GenerateFromPassword([]byte(reg.Password), bcrypt.DefaultCost)
		if err != nil {
			tb.Fatal(err)
		}
		line := reg.Username + ":" + string(hash) + "\n" // the htpasswd file format, bcrypt as `htpasswd -B`
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(line), 0o600); err != nil {
			tb.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: cube-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, filepath.Join(dir, "data"), reg.Host, auth)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("testenv: start docker-registry: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + reg.Host + "/v2/")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// 200 without auth, 401 with it: either way the registry serves.
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return reg
			}
		}
		select {
		case <-done:
			tb.Fatalf("testenv: docker-registry exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: docker-registry on %s did not answer within 15s: %v\n%s", reg.Host, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Push tags the local image src as ref in the registry (ref is "name:tag" without the host),
// pushes it, and removes the local tag again so that a pull of it must reach the registry. It
// returns the full reference.
func (r *Registry) Push(tb testing.TB, src, ref string) string {
	tb.Helper()
	cli := Docker(tb)
	full := r.Host + "/" + ref
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cli.ImageTag(ctx, src, full); err != nil {
		tb.Fatalf("testenv: tag %s as %s: %v", src, full, err)
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: r.Username, Password: r.Password, ServerAddress: r.Host})
	if err != nil {
		tb.Fatal(err)
	}
	rc, err := cli.ImagePush(ctx, full, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		tb.Fatalf("testenv: push %s: %v", full, err)
	}
	err = readBuildOutput(rc)
	rc.Close()
	if err != nil {
		tb.Fatalf("testenv: push %s: %v", full, err)
	}
	r.RemoveLocal(tb, full)
	// Whatever pulls it during the test, the image goes when the test ends.
	tb.Cleanup(func() { r.RemoveLocal(tb, full) })
	return full
}

// RemoveLocal removes a local image tag, if present, so that the Engine must pull it again.
// Containers that use the image keep it; only the tag goes.
func (r *Registry) RemoveLocal(tb testing.TB, ref string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Docker(tb).ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
		tb.Fatalf("testenv: remove local image %s: %v", ref, err)
	}
}

// PullEvents counts the Engine's "pull" events for ref since the given time.
func PullEvents(tb testing.TB, ref string, since time.Time) int {
	tb.Helper()
	cli := Docker(tb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, errs := cli.Events(ctx, events.ListOptions{
		Since:   since.UTC().Format(time.RFC3339Nano),
		Until:   time.Now().UTC().Format(time.RFC3339Nano),
		Filters: filters.NewArgs(filters.Arg("type", "image"), filters.Arg("event", "pull")),
	})
	n := 0
	for {
		select {
		case m := <-msgs:
			if m.Actor.ID == ref {
				n++
			}
		case err := <-errs:
			if err != nil && err != io.EOF {
				tb.Fatalf("testenv: docker events: %v", err)
			}
			return n
		}
	}
}
