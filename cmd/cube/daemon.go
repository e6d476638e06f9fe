package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/docker"
)

type workerConfig struct {
	host        string
	port        int
	name        string
	concurrency int
	logLevel    string
}

// shutdownGrace bounds how long a stopping daemon waits for requests and operations in flight.
const shutdownGrace = 15 * time.Second

// runWorker serves the worker until ctx is done, then drains HTTP within shutdownGrace and
// returns, leaving containers running.
func runWorker(ctx context.Context, cfg workerConfig, log *slog.Logger) error {
	log = log.With("worker", cfg.name)
	rt, err := docker.New(docker.Options{Worker: cfg.name})
	if err != nil {
		return err
	}
	defer rt.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := rt.Ping(pctx); err != nil {
		log.Warn("docker does not answer yet; /readyz reports it until it does", "err", err)
	}
	cancel()

	addr := net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}

	w := worker.New(rt, worker.Config{Name: cfg.name, Concurrency: cfg.concurrency, Logger: log})
	srv := &http.Server{
		Handler:           api.New(w, api.Options{Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(wctx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "version", version)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
	case serveErr = <-serveDone:
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
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}
