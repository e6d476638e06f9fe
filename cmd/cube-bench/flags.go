package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the command line's choices.
type options struct {
	cubeBin     string
	image       string
	out         string
	workerLog   string
	only        map[string]bool
	concurrency int
	inMemory    bool // run the worker with --in-memory rather than on a data dir of its own

	starts      int           // sequential starts (and stops) of each kind
	burst       int           // tasks in one burst
	burstRounds int           // bursts of each kind
	exits       int           // exit-detection samples
	running     int           // tasks running during the idle CPU window
	idle        time.Duration // the idle CPU window
	tracked     int           // tasks tracked for the RSS figure
	apiDuration time.Duration // how long each API load runs
	apiClients  int           // concurrent clients of the API load
	apiTasks    int           // tasks listed by GET /tasks in the API load
	poll        time.Duration // how often to poll GET /tasks/{id}
	naivePoll   bool          // poll tightly from the POST on, not from the Engine's event
	quietMax    time.Duration // how long to wait for a quiet machine before each phase

	scaleRunning     int           // tasks Running in the scale phase
	scaleTracked     int           // tasks tracked at the end of the scale phase
	scaleAt          []int         // Running counts at which the Engine's own start rate is read, besides 0 and scaleRunning
	scaleWave        int           // tasks posted per wave while the scale phase starts its tasks
	scaleExits       int           // tasks that exit at once in the scale phase
	scaleIdle        time.Duration // the scale phase's idle CPU window
	scaleListSamples int           // GET /tasks samples, cube's and each bare handler's
	engineProbe      int           // raw create+starts per reading of the Engine's start rate
	sweep            []int         // the --concurrency values of the sweep
	sweepBurst       int           // tasks in one burst of the sweep
	sweepRounds      int           // bursts of cube and of the raw SDK each per concurrency
}

// phases are the groups of measures -only may choose from, in the order they run.
var phases = []string{"api", "start", "exit", "burst", "idle", "tracked", "scale", "sweep"}

// explicit are the phases that run only when -only names them: they take many minutes and load
// the Engine with up to a thousand containers.
var explicit = []string{"scale", "sweep"}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var only string
	quick := false
	fs := flag.NewFlagSet("cube-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cubeBin, "cube", "bin/cube", "the cube binary to benchmark (make build)")
	fs.StringVar(&o.image, "image", "cube-echo:latest", "the test image (make images)")
	fs.StringVar(&o.out, "out", "bench-results/latest.json", "where to write the figures as JSON")
	fs.StringVar(&o.workerLog, "worker-log", "bench-results/worker.log", "where the worker subprocess logs")
	fs.StringVar(&only, "only", "", "run only these comma-separated phases: "+strings.Join(phases, ","))
	fs.IntVar(&o.concurrency, "concurrency", 4, "the worker's --concurrency, and the raw SDK burst's")
	fs.BoolVar(&o.inMemory, "in-memory", false, "run the worker with --in-memory (default: durable state in a temporary --data-dir, as a worker keeps it by default)")
	fs.BoolVar(&quick, "quick", false, "smaller counts and shorter windows, for a run of about 2 minutes")
	fs.IntVar(&o.starts, "starts", 30, "sequential starts and stops, of cube and of the raw SDK each")
	fs.IntVar(&o.burst, "burst", 50, "tasks in one burst")
	fs.IntVar(&o.burstRounds, "burst-rounds", 5, "bursts of cube and of the raw SDK each, alternating")
	fs.IntVar(&o.exits, "exits", 30, "exit-detection samples")
	fs.IntVar(&o.running, "running", 20, "tasks running while the worker's idle CPU is measured")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "the idle window for the CPU figure")
	fs.IntVar(&o.tracked, "tracked", 1000, "tasks tracked for the RSS figure")
	fs.DurationVar(&o.apiDuration, "api-duration", 3*time.Second, "how long each API load runs")
	fs.IntVar(&o.apiClients, "api-clients", 8, "concurrent clients of the API load")
	fs.IntVar(&o.apiTasks, "api-tasks", 1000, "tasks listed by GET /tasks in the API load")
	fs.DurationVar(&o.poll, "poll", 2*time.Millisecond, "how often to poll GET /tasks/{id} once the Engine reports the container started (or died)")
	fs.DurationVar(&o.quietMax, "quiet-max", 30*time.Second, "before each phase, wait up to this long for a quiet machine (no other containers' events, CPUs under 25% busy, for 5s); 0: do not wait")
	fs.BoolVar(&o.naivePoll, "naive-poll", false, "poll every -poll from the POST on, not from the Engine's event: the polling then slows the Engine's start")
	fs.IntVar(&o.scaleRunning, "scale-running", 1000, "scale: tasks Running on one worker")
	fs.IntVar(&o.scaleTracked, "scale-tracked", 10000, "scale: tasks tracked at the end (the rest fail at once, as ended tasks)")
	scaleAt := fs.String("scale-at", "300", "scale: comma-separated Running counts at which the Engine's own start rate is read, besides 0 and -scale-running")
	fs.IntVar(&o.scaleWave, "scale-wave", 100, "scale: tasks posted per wave (all Running before the next)")
	fs.IntVar(&o.scaleExits, "scale-exits", 20, "scale: Running tasks that exit at once")
	fs.DurationVar(&o.scaleIdle, "scale-idle", 60*time.Second, "scale: the idle CPU window with every task Running")
	fs.IntVar(&o.scaleListSamples, "scale-list-samples", 50, "scale: GET /tasks samples, of cube and of each bare handler")
	fs.IntVar(&o.engineProbe, "engine-probe", 10, "scale: raw create+starts per reading of the Engine's start rate")
	sweep := fs.String("sweep", "1,2,4,8", "sweep: the worker --concurrency values, each with a worker of its own")
	fs.IntVar(&o.sweepBurst, "sweep-burst", 100, "sweep: tasks in one burst")
	fs.IntVar(&o.sweepRounds, "sweep-rounds", 2, "sweep: bursts of cube and of the raw SDK each, per concurrency")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("starts", func() { o.starts = 10 })
		def("burst", func() { o.burst = 20 })
		def("burst-rounds", func() { o.burstRounds = 1 })
		def("exits", func() { o.exits = 10 })
		def("idle", func() { o.idle = 10 * time.Second })
		def("api-duration", func() { o.apiDuration = time.Second })
		def("quiet-max", func() { o.quietMax = 10 * time.Second })
	}
	var err error
	if o.scaleAt, err = intList(*scaleAt); err != nil {
		return o, fmt.Errorf("-scale-at: %w", err)
	}
	if o.sweep, err = intList(*sweep); err != nil || len(o.sweep) == 0 {
		return o, fmt.Errorf("-sweep: want concurrencies such as 1,2,4,8: %v", err)
	}
	o.only = map[string]bool{}
	for p := range strings.SplitSeq(only, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(phases, p) {
			return o, fmt.Errorf("-only: unknown phase %q (want some of %s)", p, strings.Join(phases, ","))
		}
		o.only[p] = true
	}
	switch {
	case o.concurrency < 1:
		return o, errors.New("-concurrency must be at least 1")
	case o.starts < 1 || o.burst < 1 || o.burstRounds < 1 || o.exits < 1 || o.running < 1 || o.tracked < 1:
		return o, errors.New("counts must be at least 1")
	case o.idle < time.Second || o.apiDuration < 100*time.Millisecond:
		return o, errors.New("-idle must be at least 1s and -api-duration at least 100ms")
	case o.apiClients < 1 || o.apiTasks < 0:
		return o, errors.New("-api-clients must be at least 1 and -api-tasks not negative")
	case o.poll <= 0:
		return o, errors.New("-poll must be positive")
	case o.scaleRunning < 1 || o.scaleWave < 1 || o.scaleExits < 0 || o.scaleExits > o.scaleRunning || o.scaleListSamples < 1 ||
		o.engineProbe < 1 || o.sweepBurst < 1 || o.sweepRounds < 1 || slices.Min(o.sweep) < 1:
		return o, errors.New("scale and sweep counts must be at least 1 (-scale-exits at most -scale-running)")
	case o.scaleIdle < time.Second:
		return o, errors.New("-scale-idle must be at least 1s")
	}
	return o, nil
}

// runs reports whether phase is to run. Steps that are no phase of their own always run; the
// explicit phases only when -only names them.
func (o options) runs(phase string) bool {
	if slices.Contains(explicit, phase) {
		return o.only[phase]
	}
	return len(o.only) == 0 || o.only[phase] || !slices.Contains(phases, phase)
}

// intList parses comma-separated integers.
func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
