package testenv

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
)

const testLabel = "cube.testenv"

// TestMain removes the images the tests built, as every package's TestMain that builds any does.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := RemoveImages(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// newLabel returns a "key=value" label unique to this test run and removes
// all containers carrying it when the test ends.
func newLabel(t *testing.T) string {
	t.Helper()
	label := fmt.Sprintf("%s=%s-%s", testLabel, t.Name(), rand.Text()[:10])
	t.Cleanup(func() {
		RemoveLabelled(t, label)
		if left := Containers(t, label); len(left) != 0 {
			t.Errorf("containers left behind with label %q: %d", label, len(left))
		}
	})
	return label
}

// runEcho creates and starts a container of the echo image with args.
func runEcho(t *testing.T, label string, hc *container.HostConfig, exposed nat.PortSet, args ...string) string {
	t.Helper()
	cli := Docker(t)
	key, value, _ := strings.Cut(label, "=")
	created, err := cli.ContainerCreate(Ctx(t, 30*time.Second), &container.Config{
		Image:        BuildEchoImage(t),
		Cmd:          args,
		Labels:       map[string]string{key: value},
		ExposedPorts: exposed,
	}, hc, nil, nil, "")
	if err != nil {
		t.Fatalf("ContainerCreate: %v", err)
	}
	if err := cli.ContainerStart(Ctx(t, 30*time.Second), created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("ContainerStart: %v", err)
	}
	return created.ID
}

func TestEchoImageConfig(t *testing.T) {
	tag := BuildEchoImage(t)
	if tag != EchoImage {
		t.Errorf("BuildEchoImage = %q, want %q", tag, EchoImage)
	}
	img, err := Docker(t).ImageInspect(Ctx(t, 30*time.Second), tag)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Config.Entrypoint; !slices.Equal(got, []string{"/echo"}) {
		t.Errorf("Entrypoint = %q", got)
	}
	if got := img.Config.Cmd; !slices.Equal(got, []string{"--listen", ":7777", "--print-env", "--log-requests"}) {
		t.Errorf("Cmd = %q", got)
	}
	if _, ok := img.Config.ExposedPorts["7777/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v, want 7777/tcp", img.Config.ExposedPorts)
	}
}

func TestEchoPrintExit(t *testing.T) {
	label := newLabel(t)
	id := runEcho(t, label, nil, nil, "--print", "hello", "--stderr", "oops", "--exit", "3")
	cli := Docker(t)

	if got := Containers(t, label); len(got) != 1 || got[0].ID != id {
		t.Errorf("Containers(%q) = %d containers, want just %.12s", label, len(got), id)
	}

	waitC, errC := cli.ContainerWait(Ctx(t, 30*time.Second), id, container.WaitConditionNotRunning)
	select {
	case res := <-waitC:
		if res.Error != nil {
			t.Fatalf("ContainerWait: %s", res.Error.Message)
		}
		if res.StatusCode != 3 {
			t.Errorf("exit code = %d, want 3", res.StatusCode)
		}
	case err := <-errC:
		t.Fatalf("ContainerWait: %v", err)
	}

	logs, err := cli.ContainerLogs(Ctx(t, 30*time.Second), id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("ContainerLogs: %v", err)
	}
	defer logs.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		t.Fatalf("demultiplexing logs: %v", err)
	}
	if stdout.String() != "hello\n" || stderr.String() != "oops\n" {
		t.Errorf("logs: stdout %q, stderr %q; want %q, %q", stdout.String(), stderr.String(), "hello\n", "oops\n")
	}

	RemoveLabelled(t, label)
	if got := Containers(t, label); len(got) != 0 {
		t.Errorf("after RemoveLabelled: %d containers left", len(got))
	}
}

func TestEchoListenAndStop(t *testing.T) {
	label := newLabel(t)
	port := nat.Port("7777/tcp")
	id := runEcho(t, label,
		&container.HostConfig{PortBindings: nat.PortMap{port: {{HostIP: "127.0.0.1", HostPort: ""}}}},
		nat.PortSet{port: {}},
		"--listen", ":7777")
	cli := Docker(t)

	info, err := cli.ContainerInspect(Ctx(t, 30*time.Second), id)
	if err != nil {
		t.Fatalf("ContainerInspect: %v", err)
	}
	bindings := info.NetworkSettings.Ports[port]
	if len(bindings) == 0 || bindings[0].HostPort == "" {
		t.Fatalf("no host port published for %s: %v", port, info.NetworkSettings.Ports)
	}
	url := fmt.Sprintf("http://127.0.0.1:%s/health", bindings[0].HostPort)

	// Poll /health until it answers, bounded by a deadline.
	httpc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := httpc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "ok" {
				break
			}
			err = fmt.Errorf("%s %q", resp.Status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s did not answer 200 ok in time: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}

	grace := 10
	start := time.Now()
	if err := cli.ContainerStop(Ctx(t, 30*time.Second), id, container.StopOptions{Timeout: &grace}); err != nil {
		t.Fatalf("ContainerStop: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ContainerStop took %v; SIGTERM seems not handled (grace %ds)", d, grace)
	}
	info, err = cli.ContainerInspect(Ctx(t, 30*time.Second), id)
	if err != nil {
		t.Fatalf("ContainerInspect: %v", err)
	}
	if info.State.Running || info.State.ExitCode != 0 || info.State.OOMKilled {
		t.Errorf("after stop: running=%v exit=%d oom=%v; want stopped with exit 0",
			info.State.Running, info.State.ExitCode, info.State.OOMKilled)
	}
}

// A certificate the test CA issues verifies against the CA's pool for its usage and 127.0.0.1,
// and not against another CA's.
func TestCAIssuesVerifiableCertificates(t *testing.T) {
	ca := NewCA(t, "cube test CA")
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		c := ca.Issue(t, "subject", usage)
		pair, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
		if err != nil {
			t.Fatalf("the issued certificate and key: %v", err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("usage %v: got %v, want it verified by the CA", usage, err)
		}
		if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
			t.Errorf("usage %v: %v, want it valid for 127.0.0.1", usage, err)
		}
		opts.Roots = NewCA(t, "another CA").Pool()
		if _, err := leaf.Verify(opts); err == nil {
			t.Errorf("usage %v: verified by another CA, want it refused", usage)
		}
	}
	if block, _ := pem.Decode([]byte(ca.CertPEM)); block == nil || block.Type != "CERTIFICATE" {
		t.Errorf("CertPEM: got %q, want a PEM certificate", ca.CertPEM)
	}
}
