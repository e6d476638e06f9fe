package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/cube-orchestrator/cube/task"
)

// minTokenLen is the shortest bearer token the worker takes. Nothing limits how fast a client
// may guess, so a token must be long: `openssl rand -hex 32` makes a good one.
const minTokenLen = 16

// maxTokenFile bounds what is read of a token file.
const maxTokenFile = 4096

// security is how the worker's API is protected, loaded from a workerConfig.
type security struct {
	token, readToken string      // bearer tokens; empty when not used
	tls              *tls.Config // nil: plain HTTP
	mutualTLS        bool        // clients must present a certificate signed by the client CA
	insecure         bool        // listening beyond loopback without authentication, as --insecure allows
}

// authenticated reports whether clients must prove who they are.
func (s security) authenticated() bool { return s.token != "" || s.readToken != "" || s.mutualTLS }

// loadSecurity reads the tokens and the TLS files that cfg names, and refuses a worker that
// would serve its API beyond loopback without authentication, unless cfg.insecure says so. Its
// errors name the flag or variable at fault.
func loadSecurity(cfg workerConfig, log *slog.Logger) (security, error) {
	var s security
	var err error
	if s.token, err = loadToken(cfg.tokenFile, cfg.token, "--token-file", "CUBE_TOKEN", log); err != nil {
		return s, err
	}
	if s.readToken, err = loadToken(cfg.readTokenFile, cfg.readToken, "--read-token-file", "CUBE_READ_TOKEN", log); err != nil {
		return s, err
	}
	if s.readToken != "" && s.token == "" {
		return s, errors.New("a read-only token needs a full-access one too: give --token-file (or CUBE_TOKEN)")
	}
	if s.readToken != "" && s.readToken == s.token {
		return s, errors.New("the read-only token and the full-access token are the same; give each its own")
	}
	if s.tls, err = loadTLS(cfg); err != nil {
		return s, err
	}
	s.mutualTLS = cfg.tlsClientCA != ""
	if !isLoopback(cfg.host) {
		if !s.authenticated() {
			if !cfg.insecure {
				return s, fmt.Errorf("refusing to serve on %s, beyond loopback, without authentication: give --token-file (or CUBE_TOKEN) or --tls-client-ca, or --insecure if anyone who reaches the port may run containers as root on this machine", cfg.host)
			}
			s.insecure = true
		}
		if s.token != "" && s.tls == nil {
			log.Warn("bearer tokens travel in clear text: serve over TLS (--tls-cert, --tls-key) on a network you do not trust")
		}
	}
	return s, nil
}

// loadToken returns the token in file (the flag named flag), or else env's value (the variable
// named envName): trimmed, at least minTokenLen long, one word of printable ASCII. It returns ""
// when neither is given.
func loadToken(file, env, flag, envName string, log *slog.Logger) (string, error) {
	source, token := envName, env
	if file != "" {
		source = flag + " " + file
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("token file is readable by others than its owner", "file", file, "mode", fi.Mode().Perm().String())
		}
		b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
		if err != nil {
			return "", fmt.Errorf("%s: %w", source, err)
		}
		if len(b) > maxTokenFile {
			return "", fmt.Errorf("%s: the file is larger than %d bytes; it should hold just the token", source, maxTokenFile)
		}
		token = string(b)
	} else if env == "" {
		return "", nil
	}
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return "", fmt.Errorf("%s: the token is empty", source)
	case strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		return "", fmt.Errorf("%s: the token must be one word of printable ASCII (no spaces, no line breaks)", source)
	case len(token) < minTokenLen:
		return "", fmt.Errorf("%s: the token has %d characters, fewer than %d; make a longer one, for example with `openssl rand -hex 32`", source, len(token), minTokenLen)
	}
	return token, nil
}

// loadTLS returns the TLS configuration cfg asks for, or nil for plain HTTP.
func loadTLS(cfg workerConfig) (*tls.Config, error) {
	switch {
	case cfg.tlsCert == "" && cfg.tlsKey == "":
		if cfg.tlsClientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for during a TLS handshake")
		}
		return nil, nil
	case cfg.tlsCert == "":
		return nil, errors.New("--tls-key needs --tls-cert")
	case cfg.tlsKey == "":
		return nil, errors.New("--tls-cert needs --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", cfg.tlsCert, cfg.tlsKey, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if cfg.tlsClientCA != "" {
		pem, err := os.ReadFile(cfg.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in the file", cfg.tlsClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// isLoopback reports whether host, as given to --host, is a loopback address: only such an
// address keeps the API on this machine. A name other than localhost is not trusted to be one.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// policyGrants lists the host access p grants, for the log; "" for none.
func policyGrants(p task.Policy) string {
	var grants []string
	for _, g := range []struct {
		on   bool
		what string
	}{
		{p.AllowPrivileged, "privileged containers"}, {p.AllowHostNetwork, "the host network"},
		{p.AllowHostPID, "the host PID namespace"}, {p.AllowCapAdd, "added capabilities"},
		{p.AllowDevices, "host devices"},
	} {
		if g.on {
			grants = append(grants, g.what)
		}
	}
	if len(p.AllowBindMounts) > 0 {
		grants = append(grants, "bind mounts under "+strings.Join(p.AllowBindMounts, ", "))
	}
	return strings.Join(grants, "; ")
}
