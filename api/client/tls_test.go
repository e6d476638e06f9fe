package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
)

// writePEM writes one PEM block to a new file in dir and returns its path.
func writePEM(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// clientCert makes a CA and a client certificate it signs, writes the certificate and its key
// to dir, and returns their paths and a pool holding the CA.
func clientCert(tb testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cube test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cube-cli"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return writePEM(tb, dir, "client.pem", "CERTIFICATE", der), writePEM(tb, dir, "client-key.pem", "EC PRIVATE KEY", keyDER), pool
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
