// Command cube-bench measures a real cube worker against the real Docker Engine, side by side
// with the raw Docker SDK doing the same work in the same run, so that the machine's noise
// cancels out of the ratios. It prints a table and writes the same figures as JSON.
//
// It starts `cube worker` (bin/cube) as a subprocess on 127.0.0.1 with a free port and a worker
// name unique to the run, and measures, each with p50/p90/p99 and the count:
//
//   - start: POST /tasks until GET /tasks/{id} says Running, interleaved with raw SDK
//     create+start of the same image and options;
//   - burst: N tasks posted at once until all are Running, next to the raw SDK doing N
//     create+starts with the worker's concurrency;
//   - exit detection: from Docker's die event to the moment GET /tasks/{id} shows Completed;
//   - stop: DELETE /tasks/{id} until the container is destroyed, next to raw SDK stop+remove;
//   - API: requests/s and latency of GET /tasks (1,000 tasks) and POST /tasks against an
//     in-process worker with a fake runtime, next to a bare net/http handler doing the same JSON
//     work;
//   - the worker's RSS idle and with 1,000 tracked tasks, and its CPU use while idle with 20
//     running tasks.
//
// Every container it makes is labelled (the worker's with cube.worker=<name>, its own with
// cube.bench.run=<run ID>) and removed at the end, also on failure and on Ctrl-C; the worker
// subprocess is stopped. See BENCHMARKS.md for the figures and what they mean.
//
// Usage:
//
//	go run ./cmd/cube-bench [-quick] [-only start,burst,exit,idle,tracked,api] [-out bench-results/latest.json]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cube-bench:", err)
		os.Exit(1)
	}
}

// run runs the benchmarks as args ask and writes the report to stdout and progress to stderr.
// Whatever happens, it removes every container it made and stops the worker before returning.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	b := newBench(opts, stdout, stderr)
	return b.run(ctx)
}
