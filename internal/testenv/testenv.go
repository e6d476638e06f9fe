// Package testenv holds helpers for tests that run against the real Docker
// Engine: a shared client, the cube-echo test image built from
// examples/echo, and label-based container listing and cleanup.
//
// It is only to be imported by _test files. Its helpers never skip: a test
// that needs Docker fails when Docker is missing.
package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// ImageLabel marks every image the tests build, with the test process's run ID as its value:
// `docker images --filter label=cube.test.image` finds what a killed test run left behind.
const ImageLabel = "cube.test.image"

// runID tells this test process's images from those of the other test processes (one per
// package) that `go test ./...` runs at the same time.
var runID = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)

// EchoImage is the tag of the test image built from examples/echo. It is this test process's
// own (never cube-echo:latest, which `make images` builds for people), so that tests touch no
// image they did not make, and RemoveImages removes it when the process ends.
var EchoImage = "cube-echo:test-" + runID

// TestImage returns a tag for an image a test builds (name "cube-worker" gives
// "cube-worker:test-<run ID>"): this process's own, removed by RemoveImages.
func TestImage(name string) string { return name + ":test-" + runID }

const (
	pingTimeout  = 5 * time.Second
	goBuildLimit = 5 * time.Minute
	imageBuild   = 3 * time.Minute
	callTimeout  = 30 * time.Second
)

var dockerClient = sync.OnceValues(func() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("creating Docker client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("pinging the Docker Engine at %s: %w", cli.DaemonHost(), err)
	}
	return cli, nil
})

// Docker returns a Docker client shared by the whole test process (safe for
// concurrent use; do not close it). It fails the test when the Docker Engine
// cannot be reached within 5 s.
func Docker(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := dockerClient()
	if err != nil {
		tb.Fatalf("testenv: Docker Engine not available (this test needs a running Docker Engine; check DOCKER_HOST and that the daemon runs): %v", err)
	}
	return cli
}

// Ctx returns a context that is done after d or at the end of the test,
// whichever comes first. It is not derived from tb.Context, so it may also be
// used in Cleanup functions.
func Ctx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

var echoImage = sync.OnceValue(func() error {
	return buildImage(EchoImage, "examples/echo/Dockerfile", "./examples/echo", "echo")
})

// BuildEchoImage builds EchoImage from examples/echo once per test process
// (later calls return at once) and returns its tag. Every caller fails when
// the build failed. Several processes may build it at the same time.
func BuildEchoImage(tb testing.TB) string {
	tb.Helper()
	if err := echoImage(); err != nil {
		tb.Fatalf("testenv: building %s: %v", EchoImage, err)
	}
	return EchoImage
}

// BuildImage builds the image tag from a Dockerfile of this repository (dockerfile, relative to
// the module root) whose context holds just the static binary of the Go package pkg at binPath.
// It fails the test when the build fails.
func BuildImage(tb testing.TB, tag, dockerfile, pkg, binPath string) {
	tb.Helper()
	if err := buildImage(tag, dockerfile, pkg, binPath); err != nil {
		tb.Fatalf("testenv: building %s: %v", tag, err)
	}
}

func buildImage(tag, dockerfilePath, pkg, binPath string) error {
	built.add(tag)
	cli, err := dockerClient()
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, dockerfilePath))
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "cube-image-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "binary")
	ctx, cancel := context.WithTimeout(context.Background(), goBuildLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}

	var buildCtx bytes.Buffer
	tw := tar.NewWriter(&buildCtx)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, dockerfile},
		{binPath, 0o755, binary},
	} {
		if err := tw.WriteHeader(&tar.Header{
			Name: f.name, Mode: f.mode, Size: int64(len(f.data)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0),
		}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	ctx, cancel = context.WithTimeout(context.Background(), imageBuild)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, &buildCtx, buildOptions(tag))
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer resp.Body.Close()
	return readBuildOutput(resp.Body)
}

// buildOptions builds tag with the classic builder, labelled with ImageLabel. It uses no build
// cache: a cached step would share intermediate images with another test process's build, and
// that process's RemoveImages could delete them while this build still needs them.
func buildOptions(tag string) build.ImageBuildOptions {
	return build.ImageBuildOptions{
		Tags: []string{tag}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, NoCache: true,
		Version: build.BuilderV1, Labels: map[string]string{ImageLabel: runID},
	}
}

// built is every tag this process built or began to build.
var built tags

type tags struct {
	mu   sync.Mutex
	list []string
}

func (t *tags) add(tag string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.list, tag) {
		t.list = append(t.list, tag)
	}
}

// RemoveImages removes every image this test process built, the ones an image built again
// under the same tag left untagged too, with the intermediate images of their builds, and
// returns the first error. TestMain calls it after m.Run, when no test uses the images any more.
// Images that are gone already are fine.
func RemoveImages() error {
	built.mu.Lock()
	n := len(built.list)
	built.mu.Unlock()
	if n == 0 {
		return nil // nothing was built: there is nothing to remove
	}
	cli, err := dockerClient()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last error
	// An image built FROM another of ours is its child and must go first; the newest first
	// gets there in one pass, and a second pass takes what a conflict held back.
	for range 2 {
		list, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", ImageLabel+"="+runID))})
		if err != nil {
			return fmt.Errorf("testenv: listing this run's images: %w", err)
		}
		if len(list) == 0 {
			return nil
		}
		slices.SortFunc(list, func(a, b image.Summary) int { return int(b.Created - a.Created) })
		last = nil
		for _, img := range list {
			_, err := cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				last = fmt.Errorf("testenv: removing image %.19s %v: %w", img.ID, img.RepoTags, err)
			}
		}
	}
	return last
}

// buildMessage is the part of a build stream message (jsonmessage) we use.
type buildMessage struct {
	Stream      string `json:"stream"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// readBuildOutput reads a whole image build response stream and returns an
// error when it reports one (including the build log, for diagnosis).
func readBuildOutput(r io.Reader) error {
	var log strings.Builder
	dec := json.NewDecoder(r)
	for {
		var m buildMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading image build output: %w\n%s", err, log.String())
		}
		log.WriteString(m.Stream)
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			// Drain the rest so the connection can be reused.
			_, _ = io.Copy(io.Discard, r)
			return fmt.Errorf("image build failed: %s\n%s", msg, log.String())
		}
	}
}

// moduleRoot finds the directory of this module's go.mod by walking up from
// the working directory (a test's working directory is its package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "examples", "echo", "main.go")); err != nil {
				return "", fmt.Errorf("module root %s has no examples/echo/main.go: %w", dir, err)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func labelFilter(label string) filters.Args {
	return filters.NewArgs(filters.Arg("label", label))
}

// Containers lists all containers (running or not) that carry label, given
// as "key" or "key=value".
func Containers(tb testing.TB, label string) []container.Summary {
	tb.Helper()
	cli := Docker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: labelFilter(label)})
	if err != nil {
		tb.Fatalf("testenv: listing containers with label %q: %v", label, err)
	}
	return list
}

// RemoveLabelled force-removes (with their anonymous volumes) all containers
// that carry label, given as "key" or "key=value". Containers that are
// already gone are fine. It may be used in t.Cleanup.
func RemoveLabelled(tb testing.TB, label string) {
	tb.Helper()
	for _, c := range Containers(tb, label) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := Docker(tb).ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		if err != nil && !cerrdefs.IsNotFound(err) && !strings.Contains(err.Error(), "already in progress") {
			tb.Errorf("testenv: removing container %.12s (label %q): %v", c.ID, label, err)
		}
	}
}

// FreePort returns a TCP port that was free on all interfaces a moment ago.
func FreePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// BuildDockerfile builds the image tag from dockerfile and a context of the given files, for
// images derived from others already present, such as EchoImage with a HEALTHCHECK.
func BuildDockerfile(tb testing.TB, tag, dockerfile string, files map[string][]byte) {
	tb.Helper()
	cli := Docker(tb)
	var buildCtx bytes.Buffer
	tw := tar.NewWriter(&buildCtx)
	all := map[string][]byte{"Dockerfile": []byte(dockerfile)}
	maps.Copy(all, files)
	for name, data := range all {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), imageBuild)
	defer cancel()
	built.add(tag)
	resp, err := cli.ImageBuild(ctx, &buildCtx, buildOptions(tag))
	if err != nil {
		tb.Fatalf("testenv: build %s: %v", tag, err)
	}
	defer resp.Body.Close()
	if err := readBuildOutput(resp.Body); err != nil {
		tb.Fatalf("testenv: build %s: %v", tag, err)
	}
}

// CloseIdle closes the idle connections of the shared Docker client and of
// http.DefaultClient, so that a leak check at the end of a test binary sees
// only goroutines that really leaked.
func CloseIdle() {
	if cli, err := dockerClient(); err == nil {
		cli.Close() // closes idle connections only; the client stays usable
	}
	http.DefaultClient.CloseIdleConnections()
}

// GetWithin polls url with GET until it answers 200 and returns the body, and fails the test
// when it does not within the given time. Each try has its own short timeout.
func GetWithin(tb testing.TB, url string, within time.Duration) string {
	tb.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("GET %s: no 200 within %v: %v", url, within, last)
	return ""
}

// WaitReady polls base+"/readyz" (base is "http://host:port" or "https://…") with c, or a plain
// client when c is nil, sending token as a bearer token when it is not empty, until the worker
// answers 200: it has recovered its tasks and the Docker Engine answers. It fails the test with
// the last answer when that does not happen within the given time. Every harness that starts a
// worker waits with it before the test goes on.
func WaitReady(tb testing.TB, c *http.Client, base, token string, within time.Duration) {
	tb.Helper()
	if c == nil {
		c = &http.Client{}
	}
	deadline := time.Now().Add(within)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			cancel()
			tb.Fatalf("testenv: readyz of %s: %v", base, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		cancel()
		if time.Now().After(deadline) {
			tb.Fatalf("testenv: the worker at %s was not ready within %v; /readyz last answered: %s", base, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
