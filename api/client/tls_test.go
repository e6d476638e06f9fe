package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
)

// writePEM writes one PEM block to a new file in dir and returns its path.
func writePEM(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	return writeFile(tb, dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

// writeFile writes text to a new file in dir, readable by its owner only, and returns its path.
func writeFile(tb testing.TB, dir, name, text string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// clientCert makes a CA and a client certificate it signs, writes the certificate and its key
// to dir, and returns their paths and a pool holding the CA.
func clientCert(tb testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	tb.Helper()
	ca := testenv.NewCA(tb, "cube test CA")
	c := ca.Issue(tb, "cube-cli", x509.ExtKeyUsageClientAuth)
	return writeFile(tb, dir, "client.pem", c.CertPEM), writeFile(tb, dir, "client-key.pem", c.KeyPEM), ca.Pool()
}

// TestTLSAndToken checks that the client trusts the CA file, presents its certificate and sends
// its bearer token.
func TestTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, clientCAs := clientCert(t, dir)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"HTTPStatusCode":401,"Message":"missing or wrong bearer token"}`))
			return
		}
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "cube-cli" {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"Status":"ok"}`))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs}
	srv.StartTLS()
	defer srv.Close()
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
	addr := strings.TrimPrefix(srv.URL, "https://")

	// host:port with TLS options means https.
	c, err := client.New(addr, client.WithCAFile(caFile), client.WithClientCert(certFile, keyFile), client.WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.URL(), "https://") {
		t.Errorf("URL: got %s, want https", c.URL())
	}
	if err := c.Healthz(ctx(t)); err != nil {
		t.Fatalf("Healthz over TLS with a client certificate and a token: %v", err)
	}

	// A wrong token is the worker's 401.
	c, _ = client.New(addr, client.WithCAFile(caFile), client.WithClientCert(certFile, keyFile), client.WithToken("wrong"))
	err = c.Healthz(ctx(t))
	if !client.IsUnauthorized(err) || task.ErrorCode(err) != task.EFORBIDDEN || err.Error() != "missing or wrong bearer token" {
		t.Errorf("wrong token: got %v (kind %q), want the 401 as EFORBIDDEN", err, task.ErrorCode(err))
	}

	// Without the client certificate the server refuses.
	c, _ = client.New(addr, client.WithCAFile(caFile), client.WithToken("s3cret"))
	err = c.Healthz(ctx(t))
	if task.ErrorCode(err) != task.EFORBIDDEN || !strings.Contains(err.Error(), "no client certificate") {
		t.Errorf("no client certificate: got %v, want the 403", err)
	}

	// Without the CA file the worker's certificate is not trusted.
	c, _ = client.New("https://"+addr, client.WithToken("s3cret"))
	err = c.Healthz(ctx(t))
	if task.ErrorCode(err) != task.EUNAVAILABLE || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("unknown CA: got %v, want EUNAVAILABLE about the certificate", err)
	}
	t.Logf("unknown CA: %v", err)
}
