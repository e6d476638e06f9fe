package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/cube-orchestrator/cube/internal/testenv"
	"go.uber.org/goleak"
)

// The end-to-end tests mostly wait for the Docker Engine, so they run in parallel (t.Parallel,
// `make test` runs 4 at once). A test that looks at the whole process (its goroutines and heap,
// every pin its workers hold) runs alone, before the parallel ones.

// TestMain fails the package when a goroutine outlives its tests: every daemon the tests start
// must stop completely, and every worker, stream and health check with it.
func TestMain(m *testing.M) {
	code := m.Run()
	if cubeBinDir != "" { // 22 MB a run, left in the temporary directory otherwise
		if err := os.RemoveAll(cubeBinDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if err := testenv.RemoveImages(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	client.CloseIdleConnections()
	testenv.CloseIdle()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind by the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
