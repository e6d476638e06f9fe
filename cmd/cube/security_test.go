package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

const (
	testToken     = "full-access-token-0123456789abcdef"
	testReadToken = "read-only-token-0123456789abcdef"
)

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadSecurity(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeFile(t, dir, "token", "  "+testToken+"\n", 0o600)
	read := writeFile(t, dir, "read", testReadToken+"\n", 0o600)
	empty := writeFile(t, dir, "empty", " \n\t", 0o600)
	short := writeFile(t, dir, "short", "abc123\n", 0o600)
	spaced := writeFile(t, dir, "spaced", "abc def ghi jkl mno pqr\n", 0o600)
	twoLines := writeFile(t, dir, "lines", testToken+"\n"+testToken+"\n", 0o600)
	big := writeFile(t, dir, "big", strings.Repeat("a", 5000), 0o600)
	ca := testenv.NewCA(t, "cube test CA")
	server := ca.Issue(t, "server", x509.ExtKeyUsageServerAuth)
	caFile := writeFile(t, dir, "ca.pem", ca.CertPEM, 0o644)
	certFile := writeFile(t, dir, "cert.pem", server.CertPEM, 0o644)
	keyFile := writeFile(t, dir, "key.pem", server.KeyPEM, 0o600)
	notPEM := writeFile(t, dir, "not.pem", "hello", 0o644)

	tests := []struct {
		name    string
		cfg     workerConfig
		wantErr []string // parts of the error; none: no error
		check   func(t *testing.T, s security)
	}{
		// An empty cfg.host below stands for 127.0.0.1, except in this case.
		{"empty host is every address", workerConfig{host: ""}, []string{"refusing"}, nil},
		{"loopback needs no token", workerConfig{host: "127.0.0.1"}, nil, func(t *testing.T, s security) {
			if s.authenticated() || s.insecure {
				t.Errorf("got %+v, want no authentication and not insecure", s)
			}
		}},
		{"ipv6 loopback", workerConfig{host: "::1"}, nil, nil},
		{"localhost", workerConfig{host: "localhost"}, nil, nil},
		{"other loopback address", workerConfig{host: "127.0.0.2"}, nil, nil},
		{"every address without a token", workerConfig{host: "0.0.0.0"}, []string{"refusing", "0.0.0.0", "--token-file", "--tls-client-ca", "--insecure"}, nil},
		{"a name is not trusted to be loopback", workerConfig{host: "worker.example"}, []string{"refusing"}, nil},
		{"a LAN address without a token", workerConfig{host: "10.1.2.3"}, []string{"refusing"}, nil},
		{"insecure", workerConfig{host: "0.0.0.0", insecure: true}, nil, func(t *testing.T, s security) {
			if !s.insecure {
				t.Error("insecure: got false, want true")
			}
		}},
		{"token file", workerConfig{host: "0.0.0.0", tokenFile: good}, nil, func(t *testing.T, s security) {
			if s.token != testToken || s.insecure {
				t.Errorf("token: got %q (insecure %v), want the file's, trimmed", s.token, s.insecure)
			}
		}},
		{"token from the environment", workerConfig{host: "0.0.0.0", token: testToken + "\n"}, nil, func(t *testing.T, s security) {
			if s.token != testToken {
				t.Errorf("token: got %q, want CUBE_TOKEN's, trimmed", s.token)
			}
		}},
		{"the file beats the environment", workerConfig{tokenFile: good, token: "other-token-from-the-environment"}, nil, func(t *testing.T, s security) {
			if s.token != testToken {
				t.Errorf("token: got %q, want the file's", s.token)
			}
		}},
		{"read token", workerConfig{tokenFile: good, readTokenFile: read}, nil, func(t *testing.T, s security) {
			if s.readToken != testReadToken {
				t.Errorf("read token: got %q, want the file's", s.readToken)
			}
		}},
		{"read token from the environment", workerConfig{tokenFile: good, readToken: testReadToken}, nil, nil},
		{"missing token file", workerConfig{tokenFile: filepath.Join(dir, "nope")}, []string{"--token-file", "no such file"}, nil},
		{"empty token file", workerConfig{tokenFile: empty}, []string{"--token-file", empty, "empty"}, nil},
		{"empty read token file", workerConfig{tokenFile: good, readTokenFile: empty}, []string{"--read-token-file", "empty"}, nil},
		{"blank CUBE_TOKEN", workerConfig{token: "   "}, []string{"CUBE_TOKEN", "empty"}, nil},
		{"short token", workerConfig{tokenFile: short}, []string{"--token-file", "6 characters", "openssl rand"}, nil},
		{"token with spaces", workerConfig{tokenFile: spaced}, []string{"--token-file", "one word"}, nil},
		{"token file of two lines", workerConfig{tokenFile: twoLines}, []string{"one word"}, nil},
		{"huge token file", workerConfig{tokenFile: big}, []string{"larger than 4096 bytes"}, nil},
		{"read token alone", workerConfig{readTokenFile: read}, []string{"read-only token needs a full-access one"}, nil},
		{"the same token twice", workerConfig{tokenFile: good, readToken: testToken}, []string{"the same"}, nil},
		{"tls", workerConfig{host: "0.0.0.0", tokenFile: good, tlsCert: certFile, tlsKey: keyFile}, nil, func(t *testing.T, s security) {
			if s.tls == nil || s.mutualTLS || s.tls.MinVersion != tls.VersionTLS12 {
				t.Errorf("tls: got %+v, want TLS 1.2 or later without client certificates", s.tls)
			}
		}},
		{"mutual tls authenticates", workerConfig{host: "0.0.0.0", tlsCert: certFile, tlsKey: keyFile, tlsClientCA: caFile}, nil, func(t *testing.T, s security) {
			if s.tls == nil || !s.mutualTLS || s.tls.ClientAuth != tls.RequireAndVerifyClientCert || !s.authenticated() {
				t.Errorf("tls: got %+v, want client certificates required and verified", s.tls)
			}
		}},
		{"tls alone is not authentication", workerConfig{host: "0.0.0.0", tlsCert: certFile, tlsKey: keyFile}, []string{"refusing"}, nil},
		{"key without cert", workerConfig{tlsKey: keyFile}, []string{"--tls-key needs --tls-cert"}, nil},
		{"cert without key", workerConfig{tlsCert: certFile}, []string{"--tls-cert needs --tls-key"}, nil},
		{"client CA without cert", workerConfig{tlsClientCA: caFile}, []string{"--tls-client-ca needs --tls-cert"}, nil},
		{"cert and key that do not parse", workerConfig{tlsCert: notPEM, tlsKey: notPEM}, []string{"--tls-cert", notPEM}, nil},
		{"client CA without PEM", workerConfig{tlsCert: certFile, tlsKey: keyFile, tlsClientCA: notPEM}, []string{"--tls-client-ca", "no PEM certificate"}, nil},
		{"missing client CA", workerConfig{tlsCert: certFile, tlsKey: keyFile, tlsClientCA: filepath.Join(dir, "nope")}, []string{"--tls-client-ca"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.host == "" && tt.name != "empty host is every address" {
				tt.cfg.host = "127.0.0.1"
			}
			s, err := loadSecurity(tt.cfg, slog.New(slog.DiscardHandler))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if tt.check != nil {
					tt.check(t, s)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one saying %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error: got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestTokenFileReadableByOthersWarns(t *testing.T) {
	t.Parallel()
	file := writeFile(t, t.TempDir(), "token", testToken, 0o644)
	var logs bytes.Buffer
	if _, err := loadSecurity(workerConfig{host: "127.0.0.1", tokenFile: file}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "readable by others") {
		t.Errorf("log: got %q, want a warning that the token file is readable by others", logs.String())
	}
}

func TestTokensInClearTextWarn(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	if _, err := loadSecurity(workerConfig{host: "0.0.0.0", token: testToken}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "clear text") {
		t.Errorf("log: got %q, want a warning that tokens travel in clear text", logs.String())
	}
}

// The command refuses an exposed worker without authentication before it touches anything, and
// bad allowances are refused by name.
func TestWorkerCommandRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--host", "0.0.0.0"}, "refusing to serve on 0.0.0.0"},
		{[]string{"--allow-bind-mounts", "srv/data"}, "--allow-bind-mounts"},
		{[]string{"--allow-bind-mounts", "/srv/../etc"}, "--allow-bind-mounts"},
		{[]string{"--allow-bind-mounts", "/srv,/run/"}, "--allow-bind-mounts /run holds /run/cube/pins"},
		{[]string{"--allow-bind-mounts", "/run/cube"}, "--allow-bind-mounts /run/cube holds"},
		{[]string{"--tls-cert", "/nonexistent/cert.pem"}, "--tls-cert needs --tls-key"},
		{[]string{"--token-file", "/nonexistent/token"}, "--token-file"},
	} {
		args := append([]string{"worker", "--port", "0", "--name", "refused", "--lock-dir", lockDir(t)}, tt.args...)
		err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("cube %s: got %v, want an error containing %q", strings.Join(args, " "), err, tt.want)
		}
	}
}

func TestInsecureAndAllowancesWarnAtStart(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start, log, and stop at once
	err := run(ctx, []string{"worker", "--host", "0.0.0.0", "--port", "0", "--name", "insecure", "--insecure", "--in-memory", "--lock-dir", lockDir(t),
		"--allow-privileged", "--allow-bind-mounts", "/srv/data/,/var/log"},
		func(string) string { return "" }, io.Discard, &logs)
	if err != nil {
		t.Fatalf("--insecure on 0.0.0.0: %v", err)
	}
	for _, want := range []string{"INSECURE", "privileged containers", "bind mounts under /srv/data, /var/log"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log: got %q, want a warning containing %q", logs.String(), want)
		}
	}
}

// request sends one request with an optional bearer token and returns the status and body.
func request(t *testing.T, c *http.Client, method, url, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func eventBody(t *testing.T) (string, uuid.UUID) {
	t.Helper()
	tk := echoTask("--listen", ":7777")
	b, err := json.Marshal(map[string]any{"ID": uuid.NewString(), "State": 2, "Task": tk})
	if err != nil {
		t.Fatal(err)
	}
	return string(b), tk.ID
}

func TestTokensEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t,
		"--token-file", writeFile(t, dir, "token", testToken+"\n", 0o600),
		"--read-token-file", writeFile(t, dir, "read", testReadToken+"\n", 0o600))
	body, id := eventBody(t)

	if code, _, _ := request(t, client, "GET", d.url+"/healthz", "", ""); code != 200 {
		t.Errorf("GET /healthz without a token: got %d, want 200", code)
	}
	code, msg, hdr := request(t, client, "GET", d.url+"/tasks", "", "")
	if code != 401 || hdr.Get("WWW-Authenticate") == "" || !strings.Contains(msg, "bearer token") {
		t.Errorf("GET /tasks without a token: got %d %s %v, want 401 with a challenge", code, msg, hdr)
	}
	if code, msg, _ := request(t, client, "POST", d.url+"/tasks", "wrong-token-0123456789", body); code != 401 {
		t.Errorf("POST with a wrong token: got %d %s, want 401", code, msg)
	}
	if code, msg, _ := request(t, client, "POST", d.url+"/tasks", testReadToken, body); code != 403 || !strings.Contains(msg, "read-only") {
		t.Errorf("POST with the read token: got %d %s, want 403", code, msg)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 0 {
		t.Fatalf("containers after refused posts: got %d, want 0", n)
	}
	if code, msg, _ := request(t, client, "POST", d.url+"/tasks", testToken, body); code != 201 {
		t.Fatalf("POST with the token: got %d %s, want 201", code, msg)
	}
	if code, _, _ := request(t, client, "GET", d.url+"/tasks/"+id.String(), testReadToken, ""); code != 200 {
		t.Errorf("GET with the read token: got %d, want 200", code)
	}
	if code, _, _ := request(t, client, "DELETE", d.url+"/tasks/"+id.String(), testReadToken, ""); code != 403 {
		t.Errorf("DELETE with the read token: got %d, want 403", code)
	}
	if code, _, _ := request(t, client, "DELETE", d.url+"/tasks/"+id.String(), testToken, ""); code != 204 {
		t.Errorf("DELETE with the token: got %d, want 204", code)
	}
	if strings.Contains(d.logs.String(), testToken) || strings.Contains(d.logs.String(), testReadToken) {
		t.Error("the worker's log shows a token")
	}
}

// tlsClient trusts ca and presents cert when it is not nil.
func tlsClient(t *testing.T, ca *testenv.CA, cert *testenv.Cert) *http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		pair, err := tls.X509KeyPair([]byte(cert.CertPEM), []byte(cert.KeyPEM))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "cube test CA")
	server := ca.Issue(t, "cube worker", x509.ExtKeyUsageServerAuth)
	manager := ca.Issue(t, "cube manager", x509.ExtKeyUsageClientAuth)
	stranger := testenv.NewCA(t, "another CA").Issue(t, "stranger", x509.ExtKeyUsageClientAuth)

	// Mutual TLS authenticates on its own, so the worker may listen beyond loopback; the test
	// still connects over loopback.
	d := startDaemon(t, "--host", "0.0.0.0",
		"--tls-cert", writeFile(t, dir, "server.pem", server.CertPEM, 0o644),
		"--tls-key", writeFile(t, dir, "server-key.pem", server.KeyPEM, 0o600),
		"--tls-client-ca", writeFile(t, dir, "ca.pem", ca.CertPEM, 0o644))
	url := "https://127.0.0.1:" + d.url[strings.LastIndex(d.url, ":")+1:]

	if code, body, _ := request(t, tlsClient(t, ca, &manager), "GET", url+"/tasks", "", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /tasks with a client certificate: got %d %s, want 200 []", code, body)
	}
	for name, c := range map[string]*http.Client{
		"without a client certificate":             tlsClient(t, ca, nil),
		"with a certificate from another CA":       tlsClient(t, ca, &stranger),
		"with the server's certificate as its own": tlsClient(t, ca, &server),
	} {
		resp, err := c.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			t.Errorf("GET %s: got %d, want the TLS handshake refused", name, resp.StatusCode)
		}
	}
	// Plain HTTP on the TLS port gets nowhere.
	resp, err := client.Get("http://127.0.0.1:" + d.url[strings.LastIndex(d.url, ":")+1:] + "/tasks")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: got %d, want 400", resp.StatusCode)
		}
	}
}

func TestTLSWithToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "cube test CA")
	server := ca.Issue(t, "cube worker", x509.ExtKeyUsageServerAuth)
	d := startDaemon(t,
		"--token-file", writeFile(t, dir, "token", testToken, 0o600),
		"--tls-cert", writeFile(t, dir, "server.pem", server.CertPEM, 0o644),
		"--tls-key", writeFile(t, dir, "server-key.pem", server.KeyPEM, 0o600))
	url := "https" + strings.TrimPrefix(d.url, "http")
	c := tlsClient(t, ca, nil)
	if code, _, _ := request(t, c, "GET", url+"/tasks", "", ""); code != 401 {
		t.Errorf("GET over TLS without a token: got %d, want 401", code)
	}
	if code, _, _ := request(t, c, "GET", url+"/tasks", testToken, ""); code != 200 {
		t.Errorf("GET over TLS with the token: got %d, want 200", code)
	}
}

// A client that sends its header slowly is cut off by ReadHeaderTimeout; one that sends too big
// a header gets 431; one that sends too big a body gets 413.
func TestRequestLimits(t *testing.T) {
	t.Parallel()
	const headerTimeout = 300 * time.Millisecond
	d := startDaemon(t, "--read-header-timeout", headerTimeout.String())
	addr := strings.TrimPrefix(d.url, "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprint(conn, "GET /tasks HTTP/1.1\r\nHost: cube\r\n") // and never the blank line
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(make([]byte, 1024))
	if elapsed := time.Since(start); err == nil || elapsed > headerTimeout+2*time.Second {
		t.Errorf("slow header: read %d bytes, err %v after %v; want the connection closed after about %v", n, err, elapsed, headerTimeout)
	}

	conn2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	fmt.Fprintf(conn2, "GET /tasks HTTP/1.1\r\nHost: cube\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", maxHeaderBytes+8192))
	conn2.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err != nil {
		t.Fatalf("oversized header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: got %d, want 431", resp.StatusCode)
	}

	code, body, _ := request(t, client, "POST", d.url+"/tasks", "", `{"ID":"`+strings.Repeat("a", api.MaxBodyBytes)+`"}`)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: got %d %s, want 413", code, body)
	}
	// And the worker still serves.
	if code, _, _ := request(t, client, "GET", d.url+"/healthz", "", ""); code != 200 {
		t.Errorf("GET /healthz after the limits: got %d, want 200", code)
	}
}
