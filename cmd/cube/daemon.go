package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/internal/metrics"
	"github.com/cube-orchestrator/cube/internal/nodestats"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/boltstore"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/docker/go-units"
)

type workerConfig struct {
	host        string
	port        int
	name        string
	concurrency int
	logLevel    string

	dataDir                  string // where the state is kept; resolved to the default when not given
	inMemory                 bool   // --in-memory: keep no state on disk
	lockDir                  string // where the worker name's lock lives (namelock)
	reapOrphans              bool
	orphanGrace              time.Duration
	reserveCPU               float64
	reserveMemory            string
	tokenFile, readTokenFile string // --token-file, --read-token-file
	token, readToken         string // CUBE_TOKEN, CUBE_READ_TOKEN; the files win
	insecure                 bool
	tlsCert, tlsKey          string
	tlsClientCA              string
	policy                   task.Policy
	keepEnded                int           // --keep-ended
	keepEndedFor             time.Duration // --keep-ended-for
	logMaxSize               string        // --log-max-size
	logMaxFiles              int           // --log-max-files
	imageKeep                time.Duration // --image-keep
	enableDebug              bool          // --enable-debug: serve /debug/pprof/
	reconcileInterval        time.Duration // --reconcile-interval; positive

	// Hidden flags, for tests. Zero takes the default.
	readHeaderTimeout time.Duration // default defaultReadHeaderTimeout
	requestTimeout    time.Duration // default api.DefaultRequestTimeout
	gcInterval        time.Duration // how often retention looks at ended tasks; default 1m
	maxTasks          int           // tasks tracked at most; default 10000
}

const (
	// shutdownGrace bounds how long a stopping daemon waits for requests and operations in flight.
	shutdownGrace = 15 * time.Second
	// defaultReadHeaderTimeout bounds the TLS handshake and the request header, so that a client
	// that connects and sends slowly (slowloris) is cut off.
	defaultReadHeaderTimeout = 10 * time.Second
	// maxHeaderBytes bounds a request's header; the API's requests need little beyond a token.
	maxHeaderBytes = 64 << 10
)

// runWorker serves the worker until ctx is done, then drains HTTP within shutdownGrace and
// returns, leaving containers running.
func runWorker(ctx context.Context, cfg workerConfig, log *slog.Logger) error {
	log = log.With("worker", cfg.name)
	sec, err := loadSecurity(cfg, log)
	if err != nil {
		return err
	}
	// Bind sources are checked where their links lead on this host, and pinned as they start.
	cfg.policy.Resolve = hostpath.Resolve
	logMax, err := units.RAMInBytes(cfg.logMaxSize)
	if err != nil {
		return fmt.Errorf("--log-max-size: %w", err)
	}
	imageState := ""
	if cfg.dataDir != "" {
		imageState = docker.ImageStatePath(cfg.dataDir)
	}
	rt, err := docker.New(docker.Options{Worker: cfg.name, Policy: cfg.policy, LogMaxSize: logMax, LogMaxFiles: cfg.logMaxFiles,
		ImageState: imageState, Logger: log})
	if err != nil {
		return err
	}
	defer rt.Close()
	// The name is claimed on the Engine before anything touches its containers: a second worker
	// with this name fails here. When the Engine does not answer yet, the worker serves, and
	// claims the name (or fails) once it does, before it runs.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lock, err := claimName(pctx, rt, cfg, log)
	cancel()
	var unknown errEngineUnknown
	var w0err error // why the Engine did not tell its ID, for the worker to report until it does
	claimLater := errors.As(err, &unknown)
	switch {
	case claimLater:
		log.Warn("docker does not answer yet; /readyz reports it until it does", "err", err)
		w0err = unknown.err
	case err != nil:
		return err
	}
	claim := &nameClaim{lock: lock}
	defer claim.release()

	capacity, err := machineCapacity(cfg)
	if err != nil {
		return err
	}
	log.Info("capacity for tasks", "cpu", capacity.CPU, "memory_bytes", capacity.Memory)
	store, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	addr := net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// The metrics time every call to the runtime, and follow the worker's tasks and changes.
	m := metrics.New(metrics.Options{Logger: log})
	w := worker.New(m.Runtime(rt), worker.Config{
		Name:              cfg.name,
		Concurrency:       cfg.concurrency,
		Logger:            log,
		Capacity:          capacity,
		Policy:            cfg.policy,
		Store:             store,
		KeepOrphans:       !cfg.reapOrphans,
		ReconcileInterval: cfg.reconcileInterval,
		OrphanGrace:       cfg.orphanGrace,
		RuntimeName:       "the Docker Engine",
		MaxTasks:          cfg.maxTasks,
		Retention:         worker.Retention{KeepEnded: cfg.keepEnded, KeepEndedFor: cfg.keepEndedFor, Interval: cfg.gcInterval},
	})
	m.Track(w)
	// Streaming answers (followed logs, event streams) end as the server shuts down, so that
	// draining does not wait for clients that never hang up.
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	handler := api.New(w, api.Options{
		Logger:         log,
		Token:          sec.token,
		ReadToken:      sec.readToken,
		RequestTimeout: cfg.requestTimeout,
		Metrics:        m.Handler(),
		Observe:        m.ObserveHTTP,
		StreamContext:  streams,
		Version:        api.Version{Version: version, Commit: commit, Name: cfg.name},
		Profiling:      cfg.enableDebug,
	})
	readHeaderTimeout := cfg.readHeaderTimeout
	if readHeaderTimeout <= 0 {
		readHeaderTimeout = defaultReadHeaderTimeout
	}
	// ReadTimeout and WriteTimeout stay 0: they would cut streaming answers (followed logs, event
	// streams) short. The API bounds each request's body and answer itself (api.Options
	// RequestTimeout), and lifts that bound only for a stream.
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         sec.tls,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(endStreams)

	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	metricsDone := make(chan error, 1)
	go func() { metricsDone <- m.Run(wctx) }()
	imagesDone := make(chan struct{})
	go func() {
		defer close(imagesDone)
		rt.RunImageGC(wctx, cfg.gcInterval, cfg.imageKeep)
	}()
	defer func() { stopWorker(); <-imagesDone }() // before rt.Close
	workerDone := make(chan error, 1)
	claimFailed := make(chan error, 1)
	go func() {
		if claimLater {
			w.RuntimeDown(w0err)
			l, err := claimNameWhenUp(wctx, rt, cfg, log, w.RuntimeDown)
			if err != nil {
				if wctx.Err() == nil {
					claimFailed <- err
				}
				workerDone <- nil
				return
			}
			claim.set(l)
		}
		err := w.Run(wctx)
		claim.release() // after Run: nothing touches the containers any more
		workerDone <- err
	}()
	serveDone := make(chan error, 1)
	go func() {
		if sec.tls != nil {
			serveDone <- srv.ServeTLS(ln, "", "")
			return
		}
		serveDone <- srv.Serve(ln)
	}()
	log.Info("listening", "addr", ln.Addr().String(), "version", version, "tls", sec.tls != nil,
		"client_certs", sec.mutualTLS, "tokens", tokenKinds(sec))
	if grants := policyGrants(cfg.policy); grants != "" {
		log.Warn("tasks may have host access: " + grants)
	}
	if sec.insecure {
		log.Warn("INSECURE: the API is open to anyone who reaches " + ln.Addr().String() + ", and lets them run containers as root on this machine (--insecure)")
	}

	var serveErr, claimErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
	case serveErr = <-serveDone:
	case claimErr = <-claimFailed:
		log.Error("shutting down: the worker cannot run under its name", "err", claimErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	stopWorker()
	select {
	case err := <-workerDone:
		if err != nil {
			return err
		}
	case <-sctx.Done():
		log.Warn("worker operations still under way at exit")
	}
	if err := <-metricsDone; err != nil { // it returns as soon as wctx is done
		return err
	}
	if claimErr != nil {
		return claimErr
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}

// machineCapacity is what tasks may claim: the machine's CPUs and memory less the reserves.
func machineCapacity(cfg workerConfig) (worker.Capacity, error) {
	reserve, err := units.RAMInBytes(cfg.reserveMemory)
	if err != nil {
		return worker.Capacity{}, fmt.Errorf("--reserve-memory: %w", err)
	}
	st, err := (nodestats.Reader{}).Read()
	if err != nil || st.MemStats == nil {
		return worker.Capacity{}, fmt.Errorf("read the machine's memory: %w", err)
	}
	c := worker.Capacity{
		CPU:    float64(runtime.NumCPU()) - cfg.reserveCPU,
		Memory: int64(st.MemStats.MemTotal)*1024 - reserve,
	}
	if c.CPU <= 0 || c.Memory <= 0 {
		return worker.Capacity{}, fmt.Errorf("the reserves leave nothing for tasks: %g CPUs and %d bytes of memory", c.CPU, c.Memory)
	}
	return c, nil
}

// tokenKinds describes the bearer tokens in force, for the log.
func tokenKinds(s security) string {
	switch {
	case s.readToken != "":
		return "full+read"
	case s.token != "":
		return "full"
	}
	return "none"
}

// openStore opens the durable store in the data dir, or an in-memory one with --in-memory. A data
// dir another worker holds is an error at once.
func openStore(cfg workerConfig, log *slog.Logger) (worker.Store, error) {
	if cfg.inMemory {
		log.Warn("state is kept in memory (--in-memory): a crash loses accepted tasks that have no container yet and acknowledged stops; running containers are taken up again from their labels")
		return &worker.MemoryStore{}, nil
	}
	s, err := boltstore.OpenDir(cfg.dataDir, boltstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	log.Info("state is kept on disk", "data_dir", cfg.dataDir, "tasks", s.Len(), "orders", len(s.Orders()))
	return s, nil
}

// defaultDataDir is where a worker keeps its state when --data-dir does not say: as root
// /var/lib/cube/NAME, otherwise $XDG_STATE_HOME/cube/NAME or ~/.local/state/cube/NAME. The
// worker's name is part of the path so that workers with different names on one machine keep
// their states apart (a data dir is held by one worker at a time); a worker that is renamed
// starts from a new one, and takes up its containers from their labels.
func defaultDataDir(getenv func(string) string, euid int, name string) (string, error) {
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("the worker's name %q cannot name its state directory; give --data-dir", name)
	}
	if euid == 0 {
		return filepath.Join("/var/lib/cube", name), nil
	}
	if x := getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "cube", name), nil
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", "cube", name), nil
	}
	return "", fmt.Errorf("no state directory: HOME is not set; give --data-dir, or --in-memory")
}
