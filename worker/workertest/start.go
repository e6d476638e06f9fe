package workertest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Worker is what Start needs of a worker: *worker.Worker has both methods. (workertest does not
// import worker, so that worker's own tests can use it.)
type Worker interface {
	Run(ctx context.Context) error
	Ready(ctx context.Context) error
}

// StopTimeout bounds how long Start's cleanup waits for Run to return once its context is done.
const StopTimeout = 30 * time.Second

// Start runs w.Run until the test ends and waits, up to within, until w.Ready answers nil: the
// worker has recovered its state and its runtime answers. It fails the test when w is not
// ready in time or Run fails. Its cleanup cancels Run and waits for it to return; a cleanup
// registered after Start runs before the worker stops.
func Start(tb testing.TB, w Worker, within time.Duration) {
	tb.Helper()
	Run(tb, w)
	WaitReady(tb, w, within)
}

// Run runs w.Run until the test ends or stop is called, and returns stop. stop cancels Run and
// waits for it to return, failing the test when Run fails or does not return within
// StopTimeout; it is safe to call more than once, and the test's cleanup calls it. Every harness
// that runs a worker for a test runs it through Run.
func Run(tb testing.TB, w Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run: got %v, want nil", err)
			}
		case <-time.After(StopTimeout):
			tb.Errorf("Run did not return within %v of cancel", StopTimeout)
		}
	})
	tb.Cleanup(stop)
	return stop
}

// WaitReady waits, up to within, until w.Ready answers nil, and fails the test with its last
// answer when it does not.
func WaitReady(tb testing.TB, w Worker, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := w.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("workertest: the worker was not ready within %v: %v", within, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
