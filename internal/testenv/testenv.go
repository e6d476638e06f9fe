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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// EchoImage is the tag of the test image built from examples/echo.
const EchoImage = "cube-echo:latest"

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
	resp, err := cli.ImageBuild(ctx, &buildCtx, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer resp.Body.Close()
	return readBuildOutput(resp.Body)
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
	resp, err := cli.ImageBuild(ctx, &buildCtx, build.ImageBuildOptions{
		Tags: []string{tag}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
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
