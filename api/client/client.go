// Package client is a Go client for a cube worker's HTTP API: one typed, context-aware method per
// route. The cube CLI and the end-to-end tests use it, and a manager process may import it.
//
//	c, err := client.New("127.0.0.1:5556", client.WithToken(token))
//	t, err := c.Start(ctx, task.Task{Name: "web", Image: "cube-echo:latest"})
//	t, err = c.Get(ctx, t.ID)
//
// Every error the worker answers with becomes an [*Error] that unwraps to a [*task.Error] of the
// kind the worker mapped to the status, with the worker's own message, so [task.ErrorCode] tells
// a caller what went wrong (ENOTFOUND, ECONFLICT, EINVALID, EFORBIDDEN, EUNAVAILABLE, EINTERNAL).
// A worker that cannot be reached is an EUNAVAILABLE error naming the address and the reason.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/api/errmap"
	"github.com/cube-orchestrator/cube/task"
)

// Client talks to one worker. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	hc      *http.Client
	token   string
	timeout time.Duration // per request that is not a stream; 0: none
}

// options collects what the Options ask for; New builds the Client from it.
type options struct {
	hc         *http.Client
	token      string
	caFile     string
	certFile   string
	keyFile    string
	tlsConfig  *tls.Config
	timeout    time.Duration
	timeoutSet bool
}

// Option configures a Client.
type Option func(*options)

// WithHTTPClient makes the Client send its requests with hc. TLS options then apply to a copy
// of hc's transport, which must be an *http.Transport (or nil, for http.DefaultTransport).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) { o.hc = hc }
}

// WithToken makes the Client send "Authorization: Bearer token" with every request.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithCAFile makes the Client trust the PEM certificates in file (and only those) to verify the
// worker's TLS certificate. A base URL without a scheme then means https.
func WithCAFile(file string) Option {
	return func(o *options) { o.caFile = file }
}

// WithClientCert makes the Client present the PEM certificate in certFile, with the key in
// keyFile, to a worker that asks for one. A base URL without a scheme then means https.
func WithClientCert(certFile, keyFile string) Option {
	return func(o *options) { o.certFile, o.keyFile = certFile, keyFile }
}

// WithTLSConfig makes the Client use cfg for https; WithCAFile and WithClientCert add to a clone
// of it. A base URL without a scheme then means https.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) { o.tlsConfig = cfg }
}

// WithTimeout bounds each request that is not a stream (Logs and Events are bounded only by
// their context). The default is 30 s; 0 means no bound beyond the context.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout, o.timeoutSet = d, true }
}

// DefaultTimeout bounds each request that is not a stream, unless WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// New returns a Client for the worker at baseURL: "http://host:port", "https://host:port", or
// just "host:port", which means http, or https when a TLS option is given. It fails when
// baseURL is not such an address or a certificate file cannot be loaded.
func New(baseURL string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	useTLS := o.caFile != "" || o.certFile != "" || o.keyFile != "" || o.tlsConfig != nil
	base, err := parseBase(baseURL, useTLS)
	if err != nil {
		return nil, err
	}

	hc := o.hc
	if hc == nil {
		hc = &http.Client{}
	} else {
		c := *hc
		hc = &c
	}
	if useTLS {
		cfg, err := o.buildTLS()
		if err != nil {
			return nil, err
		}
		var tr *http.Transport
		switch t := hc.Transport.(type) {
		case nil:
			tr = http.DefaultTransport.(*http.Transport).Clone()
		case *http.Transport:
			tr = t.Clone()
		default:
			return nil, fmt.Errorf("client: TLS options need an *http.Transport, the HTTP client has a %T", hc.Transport)
		}
		tr.TLSClientConfig = cfg
		hc.Transport = tr
	}
	timeout := DefaultTimeout
	if o.timeoutSet {
		timeout = o.timeout
	}
	// Streams must not be cut by http.Client.Timeout, so the bound is applied per request.
	hc.Timeout = 0
	return &Client{base: base, hc: hc, token: o.token, timeout: timeout}, nil
}

func parseBase(raw string, useTLS bool) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("client: the worker's address is empty; want host:port or a URL")
	}
	if !strings.Contains(raw, "://") {
		scheme := "http://"
		if useTLS {
			scheme = "https://"
		}
		raw = scheme + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("client: %q is not a worker address; want host:port, http://host:port or https://host:port", strings.TrimPrefix(strings.TrimPrefix(raw, "http://"), "https://"))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: worker address %q must not have a query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

func (o options) buildTLS() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.tlsConfig != nil {
		cfg = o.tlsConfig.Clone()
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("client: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("client: a client certificate needs both its certificate file and its key file")
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: load client certificate: %w", err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return cfg, nil
}

// URL returns the worker's base URL.
func (c *Client) URL() string { return c.base.String() }

// Error is an error answer from the worker. It unwraps to a *task.Error of the kind the status
// stands for, with the worker's message, so task.ErrorCode and task.ErrorMessage work on it.
type Error struct {
	StatusCode int       // the HTTP status
	Code       task.Code // the kind the status stands for
	Message    string    // the worker's message
}

// Error returns the worker's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the error as a *task.Error.
func (e *Error) Unwrap() error { return &task.Error{Code: e.Code, Message: e.Message} }

// IsUnauthorized reports whether err is the worker's 401 answer: no token, or a wrong one. (Its
// kind is EFORBIDDEN, as is that of a 403, which refuses a request the token may not make.)
func IsUnauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusUnauthorized
}

// errorBody is the worker's error answer, api.ErrorResponse.
type errorBody struct {
	HTTPStatusCode int
	Message        string
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// responseError reads the error answer resp and returns it as an *Error. An answer that is not
// the worker's JSON error (a proxy's page, say) keeps its first line as the message.
func responseError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{StatusCode: resp.StatusCode, Code: errmap.Code(resp.StatusCode)}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Message != "" {
		e.Message = eb.Message
		return e
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	// A worker's own answers are JSON, its 404 and 405 included; Go's HTTP server answers a few
	// malformed requests (400, 431) in plain text itself. A web page, or a 404 or 405 that is not
	// JSON, comes from something else.
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/html") || strings.HasPrefix(line, "<") ||
		resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		e.Message = notAWorker(resp)
	case line != "":
		e.Message = fmt.Sprintf("%s (HTTP %d)", line, resp.StatusCode)
	default:
		e.Message = fmt.Sprintf("the worker answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return e
}

// notAWorker says that the server at the response's address is not a cube worker, and what it
// answered: "127.0.0.1:8080 is not a cube worker (it answered 404 Not Found, text/html)".
func notAWorker(resp *http.Response) string {
	what := resp.Status
	if what == "" {
		what = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		ct, _, _ = strings.Cut(ct, ";")
		what += ", " + ct
	}
	return fmt.Sprintf("%s is not a cube worker (it answered %s)", resp.Request.URL.Host, what)
}

// transportError describes a request that got no answer. A cancelled or expired context is
// returned as the context's error; anything else is an EUNAVAILABLE error naming the worker's
// address and the innermost reason ("connection refused"), which it wraps.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	reason := err
	for {
		next := errors.Unwrap(reason)
		if next == nil {
			break
		}
		reason = next
	}
	return task.Wrap(task.EUNAVAILABLE, reason, "cannot reach the worker at "+c.base.Host)
}

// request describes one call.
type request struct {
	method string
	path   string     // below the base URL, escaped
	query  url.Values // may be nil
	body   any        // encoded as JSON when not nil
	accept string     // the Accept header; default application/json
	stream bool       // the answer is a stream: no per-request timeout
	header http.Header
}

// send sends req and returns the response when its status is 2xx; otherwise it reads the error
// answer and returns it as an *Error. The caller closes the body, and calls the returned cancel
// when done with it.
func (c *Client) send(ctx context.Context, req request) (*http.Response, context.CancelFunc, error) {
	parent, cancel := ctx, context.CancelFunc(func() {})
	if !req.stream && c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	u := *c.base
	u.Path += req.path
	u.RawPath = ""
	if req.query != nil {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			cancel()
			return nil, nil, fmt.Errorf("client: encode %s %s body: %w", req.method, req.path, err)
		}
		body = bytes.NewReader(b)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
	}
	for k, v := range req.header {
		hreq.Header[k] = v
	}
	if req.body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	accept := req.accept
	if accept == "" {
		accept = "application/json"
	}
	hreq.Header.Set("Accept", accept)
	if c.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		cancel()
		if parent.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, task.Wrap(task.EUNAVAILABLE, context.DeadlineExceeded,
				fmt.Sprintf("the worker at %s did not answer within %v", c.base.Host, c.timeout))
		}
		return nil, nil, c.transportError(parent, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		defer cancel()
		return nil, nil, responseError(resp)
	}
	return resp, cancel, nil
}

// do sends req and decodes a JSON answer into out (unless out is nil).
func (c *Client) do(ctx context.Context, req request, out any) error {
	resp, cancel, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return task.Errorf(task.EINVALID, "%s", notAWorker(resp))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if _, ok := err.(*json.SyntaxError); ok {
			return task.Wrap(task.EINVALID, err, notAWorker(resp))
		}
		return task.Wrap(task.EINTERNAL, err, fmt.Sprintf("decode the answer to %s %s", req.method, req.path))
	}
	return nil
}
