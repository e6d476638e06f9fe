package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Dist summarizes samples of a duration, in milliseconds. Percentiles are nearest-rank: p99 of
// 30 samples is the largest.
type Dist struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Min   float64 `json:"min_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func distOf(samples []time.Duration) Dist {
	if len(samples) == 0 {
		return Dist{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Dist{
		Count: len(s),
		P50:   ms(rank(0.50)),
		P90:   ms(rank(0.90)),
		P99:   ms(rank(0.99)),
		Min:   ms(s[0]),
		Max:   ms(s[len(s)-1]),
		Mean:  ms(sum / time.Duration(len(s))),
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// ratio returns a/b rounded to 3 places, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

// Machine is where the figures came from.
type Machine struct {
	Time          time.Time `json:"time"`
	Hostname      string    `json:"hostname"`
	CPUs          int       `json:"cpus"`
	CPUModel      string    `json:"cpu_model"`
	MemTotalMiB   int64     `json:"mem_total_mib"`
	Kernel        string    `json:"kernel"`
	GoVersion     string    `json:"go_version"`
	DockerVersion string    `json:"docker_version"`
	DockerAPI     string    `json:"docker_api"`
	StorageDriver string    `json:"storage_driver"`
	CubeVersion   string    `json:"cube_version"`
}

// Compare is one measure of cube next to the raw SDK doing the same work.
type Compare struct {
	Cube  Dist    `json:"cube"`
	Raw   Dist    `json:"raw_sdk"`
	Ratio float64 `json:"ratio_p50"` // cube p50 / raw p50
	// PairedDiff and PairedRatio are the medians of cube's sample minus, and over, the raw
	// SDK's of the same round: what cube adds, with the Engine's drift between rounds (other
	// users of a shared machine) cancelled.
	PairedDiff  float64 `json:"paired_diff_p50_ms"`
	PairedRatio float64 `json:"paired_ratio_p50"`
}

// StartResult is the start measure, with the raw SDK doing also what cube's adapter does around
// create+start (image inspect before, container inspect after), to apportion the difference.
type StartResult struct {
	Compare
	RawFull      Dist    `json:"raw_sdk_full"`
	RatioRawFull float64 `json:"ratio_p50_raw_full"` // cube p50 / raw full p50
	// Each kind of start split at the Engine's start event for the container.
	Split map[string]Dist `json:"split"`
}

// BurstResult is the burst measure: the wall times of whole bursts, one sample per round.
type BurstResult struct {
	Tasks       int     `json:"tasks"`
	Rounds      int     `json:"rounds"`
	Concurrency int     `json:"concurrency"`
	CubeWall    Dist    `json:"cube_wall"`
	RawWall     Dist    `json:"raw_sdk_wall"`
	Ratio       float64 `json:"ratio_wall_p50"`
	PairedDiff  float64 `json:"paired_diff_p50_ms"`
	PairedRatio float64 `json:"paired_ratio_p50"`
}

// Load is one API load: requests per second and latency.
type Load struct {
	RPS        float64 `json:"rps"`
	Latency    Dist    `json:"latency"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

// APIPair is one route under load, cube next to a bare handler doing the same JSON work.
type APIPair struct {
	Cube     Load    `json:"cube"`
	Bare     Load    `json:"bare"`
	RPSRatio float64 `json:"rps_ratio"` // cube rps / bare rps
}

// APIResult is the API measure.
type APIResult struct {
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Tasks    int     `json:"tasks_listed"`
	List     APIPair `json:"get_tasks"`
	Submit   APIPair `json:"post_tasks"`
	Process  string  `json:"process"`
	Note     string  `json:"note"`
	BodySize int     `json:"get_tasks_body_bytes"`
}

// Mem is one reading of the worker's memory: its resident set (VmRSS), the median and the
// largest over a few seconds, and its peak since it started (VmHWM).
type Mem struct {
	When   string  `json:"when"`
	Tasks  int     `json:"tasks_tracked"`
	RSSMiB float64 `json:"rss_mib"`
	MaxMiB float64 `json:"rss_max_mib"`
	HWMMiB float64 `json:"peak_rss_mib"`
	// AnonMiB and FileMiB split the median sample: the heap and stacks, and the binary's and
	// the database's file pages.
	AnonMiB float64 `json:"rss_anon_mib"`
	FileMiB float64 `json:"rss_file_mib"`
}

// CPUResult is the worker's CPU use while idle with tasks running.
type CPUResult struct {
	Running    int     `json:"running_tasks"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Percent    float64 `json:"percent_of_a_core"`
	// utime+stime count in ticks of 10 ms: over 30 s a tick is 0.033 % of a core. The scheduler's
	// own count (se.sum_exec_runtime) is exact, where the kernel has it.
	ExecSeconds float64 `json:"exec_cpu_seconds,omitempty"`
	ExecPercent float64 `json:"exec_percent_of_a_core,omitempty"`
}

// TrackedResult says how the tasks for the RSS figure were made.
type TrackedResult struct {
	Tasks   int     `json:"tasks"`
	How     string  `json:"how"`
	Seconds float64 `json:"seconds"`
	// The worker subprocess's own GET /tasks with every task it tracks, for reference.
	ListLatency Dist `json:"get_tasks_latency"`
	ListBytes   int  `json:"get_tasks_body_bytes"`
}

// Bar is one line of the bar.
type Bar struct {
	Measure string  `json:"measure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Limit   string  `json:"limit"`
	Met     bool    `json:"met"`
	Skipped bool    `json:"skipped,omitempty"`
}

// Results is everything one run measured; it is what the JSON file holds.
type Results struct {
	Machine Machine        `json:"machine"`
	Options map[string]any `json:"options"`
	Start   *StartResult   `json:"start,omitempty"`
	Burst   *BurstResult   `json:"burst,omitempty"`
	Exit    *Dist          `json:"exit_detection,omitempty"`
	Stop    *Compare       `json:"stop,omitempty"`
	API     *APIResult     `json:"api,omitempty"`
	Memory  []Mem          `json:"memory,omitempty"`
	CPU     *CPUResult     `json:"idle_cpu,omitempty"`
	Tracked *TrackedResult `json:"tracked,omitempty"`
	Scale   *ScaleResult   `json:"scale,omitempty"`
	Sweep   []SweepPoint   `json:"sweep,omitempty"`
	Bar     []Bar          `json:"bar"`
	// ForeignEvents counts, per phase, the Engine's start, die and destroy events of containers
	// that were not the run's: someone else using the Engine meanwhile.
	ForeignEvents map[string]int `json:"foreign_docker_events,omitempty"`
	// Quiet says, per phase, how long the run waited for a quiet machine before it, and whether
	// the machine got quiet (false: measured anyway after a minute).
	Quiet   map[string]QuietWait `json:"quiet_wait,omitempty"`
	Errors  []string             `json:"errors,omitempty"`
	Seconds float64              `json:"seconds"`
}

// QuietWait is how a phase waited for a quiet machine.
type QuietWait struct {
	Seconds float64 `json:"seconds"`
	Quiet   bool    `json:"quiet"`
}

func (r *Results) noteQuiet(phase string, waited time.Duration, quiet bool) {
	if r.Quiet == nil {
		r.Quiet = map[string]QuietWait{}
	}
	r.Quiet[phase] = QuietWait{Seconds: waited.Round(100 * time.Millisecond).Seconds(), Quiet: quiet}
}

func (r *Results) mem(when string) *Mem {
	for i := range r.Memory {
		if r.Memory[i].When == when {
			return &r.Memory[i]
		}
	}
	return nil
}

// bar judges the figures by the bar.
func (r *Results) bar() []Bar {
	var out []Bar
	add := func(measure string, ok bool, v float64, unit, limit string, met bool) {
		out = append(out, Bar{Measure: measure, Value: v, Unit: unit, Limit: limit, Met: ok && met, Skipped: !ok})
	}
	add("start latency p50 ratio (cube / raw SDK)", r.Start != nil, ratioOr(r.Start, func(s *StartResult) float64 { return s.Ratio }), "×", "≤ 1.05", r.Start != nil && r.Start.Ratio <= 1.05)
	add("burst wall-time ratio (cube / raw SDK)", r.Burst != nil, ratioOr(r.Burst, func(b *BurstResult) float64 { return b.Ratio }), "×", "≤ 1.05", r.Burst != nil && r.Burst.Ratio <= 1.05)
	add("exit detection p99", r.Exit != nil, ratioOr(r.Exit, func(d *Dist) float64 { return d.P99 }), "ms", "< 100", r.Exit != nil && r.Exit.P99 < 100)
	add("stop p50 ratio (cube / raw SDK)", r.Stop != nil, ratioOr(r.Stop, func(c *Compare) float64 { return c.Ratio }), "×", "≤ 1.05", r.Stop != nil && r.Stop.Ratio <= 1.05)
	add("idle CPU with running tasks", r.CPU != nil, ratioOr(r.CPU, func(c *CPUResult) float64 { return c.Percent }), "% of a core", "< 1", r.CPU != nil && r.CPU.Percent < 1)
	idle, tracked := r.mem("idle"), r.mem("tracked")
	add("RSS idle", idle != nil, ratioOr(idle, func(m *Mem) float64 { return m.RSSMiB }), "MiB", "< 30", idle != nil && idle.RSSMiB < 30)
	add("RSS with tracked tasks", tracked != nil, ratioOr(tracked, func(m *Mem) float64 { return m.RSSMiB }), "MiB", "< 60", tracked != nil && tracked.RSSMiB < 60)
	if sc := r.Scale; sc != nil {
		n := fmt.Sprintf("%d running", sc.Running)
		if l := sc.ListRunning; l != nil {
			add("scale: GET /tasks p50 ratio (cube / bare encode), "+n, true, l.Ratio, "×", "≤ 1.2", l.Ratio <= 1.2)
			add("scale: GET /tasks max, "+n, true, l.Cube.Max, "ms", "< 15", l.Cube.Max < 15)
		}
		if m := r.memPrefix("scale: ", " running"); m != nil {
			add("scale: RSS, "+n, true, m.RSSMiB, "MiB", "< 30", m.RSSMiB < 30)
		}
		if c := sc.IdleCPU; c != nil {
			add(fmt.Sprintf("scale: idle CPU over %.0f s, %s", c.Seconds, n), true, c.Percent, "% of a core", "< 0.3", c.Percent < 0.3)
		}
		if e := sc.Exits; e != nil {
			add(fmt.Sprintf("scale: %d exits at once, die → GET Completed p99", sc.Exiting), true, e.P99, "ms", "< 10", e.P99 < 10)
		}
		if k := sc.Restart; k != nil {
			add("scale: /readyz 200 after kill -9", true, k.ReadySeconds, "s", "< 1", k.ReadySeconds < 1)
			add(fmt.Sprintf("scale: taken up as they were after kill -9 (of %d; restarted %d)", k.Running, k.Restarted), true, float64(min(k.TakenUp, k.StillUp)), "tasks",
				fmt.Sprintf("= %d, 0 restarted", k.Running), k.TakenUp == k.Running && k.StillUp == k.Running && k.Restarted == 0)
		}
		if l := sc.ListTracked; l != nil {
			add(fmt.Sprintf("scale: GET /tasks p50 ratio (cube / bare encode), %d tracked", l.Tasks), true, l.Ratio, "×", "≤ 1.2", l.Ratio <= 1.2)
		}
		if m := r.memPrefix("scale: ", " tracked"); m != nil {
			add(fmt.Sprintf("scale: RSS, %d tracked", m.Tasks), true, m.RSSMiB, "MiB", "< 80", m.RSSMiB < 80)
		}
	}
	for _, p := range r.Sweep {
		if p.Burst != nil {
			add(fmt.Sprintf("sweep: burst of %d, --concurrency %d, wall ratio (cube / raw SDK)", p.Burst.Tasks, p.Concurrency), true, p.Burst.Ratio, "×", "≤ 1.05", p.Burst.Ratio <= 1.05)
		}
	}
	return out
}

// memPrefix returns the memory reading whose When has the prefix and the suffix.
func (r *Results) memPrefix(prefix, suffix string) *Mem {
	for i := range r.Memory {
		if w := r.Memory[i].When; strings.HasPrefix(w, prefix) && strings.HasSuffix(w, suffix) {
			return &r.Memory[i]
		}
	}
	return nil
}

func ratioOr[T any](p *T, f func(*T) float64) float64 {
	if p == nil {
		return 0
	}
	return f(p)
}

// writeJSON writes the results to path, making its directory.
func (r *Results) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the figures as aligned tables.
func (r *Results) printTable(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	m := r.Machine
	fmt.Fprintf(out, "\ncube-bench %s: %d CPUs (%s), %d MiB, kernel %s, Docker %s (API %s, %s), %s, %s\n\n",
		m.Time.Format(time.RFC3339), m.CPUs, m.CPUModel, m.MemTotalMiB, m.Kernel, m.DockerVersion, m.DockerAPI,
		m.StorageDriver, m.GoVersion, m.CubeVersion)

	fmt.Fprintln(tw, "measure\tn\tp50 ms\tp90 ms\tp99 ms\tmax ms\tratio of p50s\t")
	row := func(name string, d Dist, ratio string) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", name, d.Count, d.P50, d.P90, d.P99, d.Max, ratio)
	}
	cmp := func(c Compare) string {
		return fmt.Sprintf("%.3f (paired %.3f, Δ %+.1f ms)", c.Ratio, c.PairedRatio, c.PairedDiff)
	}
	if s := r.Start; s != nil {
		row("start: cube POST→Running", s.Cube, cmp(s.Compare))
		row("start: raw create+start", s.Raw, "1")
		row("start: raw inspect+create+start+inspect", s.RawFull, fmt.Sprintf("(%.3f)", s.RatioRawFull))
		for _, k := range slices.Sorted(maps.Keys(s.Split)) {
			row("  "+k, s.Split[k], "")
		}
	}
	if b := r.Burst; b != nil {
		row(fmt.Sprintf("burst %d: cube wall", b.Tasks), b.CubeWall, cmp(Compare{Ratio: b.Ratio, PairedDiff: b.PairedDiff, PairedRatio: b.PairedRatio}))
		row(fmt.Sprintf("burst %d: raw wall (concurrency %d)", b.Tasks, b.Concurrency), b.RawWall, "1")
	}
	if e := r.Exit; e != nil {
		row("exit: die event→GET Completed", *e, "")
	}
	if s := r.Stop; s != nil {
		row("stop: cube DELETE→destroyed", s.Cube, cmp(*s))
		row("stop: raw stop+remove→destroyed", s.Raw, "1")
	}
	if t := r.Tracked; t != nil {
		row(fmt.Sprintf("worker GET /tasks (%d tasks, %d B)", t.Tasks, t.ListBytes), t.ListLatency, "")
	}
	tw.Flush()

	if a := r.API; a != nil {
		fmt.Fprintf(out, "\nAPI, in-process, %d clients for %.1fs each (%s):\n", a.Clients, a.Seconds, a.Process)
		fmt.Fprintln(tw, "route\treq/s\tp50 ms\tp90 ms\tp99 ms\terrors\treq/s ratio\t")
		load := func(name string, l Load, ratio string) {
			fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%s\t\n", name, l.RPS, l.Latency.P50, l.Latency.P90, l.Latency.P99, l.Errors, ratio)
		}
		load(fmt.Sprintf("cube GET /tasks (%d tasks)", a.Tasks), a.List.Cube, fmt.Sprintf("%.3f", a.List.RPSRatio))
		load("bare encode of the same list", a.List.Bare, "1")
		load("cube POST /tasks", a.Submit.Cube, fmt.Sprintf("%.3f", a.Submit.RPSRatio))
		load("bare decode event, encode task", a.Submit.Bare, "1")
		tw.Flush()
	}

	if len(r.Memory) > 0 || r.CPU != nil {
		fmt.Fprintln(out, "\nworker process:")
		fmt.Fprintf(tw, "when\ttasks\tRSS MiB (median of %v)\tanonymous\tfile\tmax\tpeak since start\t\n", rssWindow)
		for _, m := range r.Memory {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", m.When, m.Tasks, m.RSSMiB, m.AnonMiB, m.FileMiB, m.MaxMiB, m.HWMMiB)
		}
		tw.Flush()
		if c := r.CPU; c != nil {
			fmt.Fprintf(out, "idle CPU with %d running tasks: %.2f s over %.0f s = %.3f %% of a core (utime+stime, in 10 ms ticks)",
				c.Running, c.CPUSeconds, c.Seconds, c.Percent)
			if c.ExecSeconds > 0 {
				fmt.Fprintf(out, "; %.4f s = %.4f %% by the scheduler's count", c.ExecSeconds, c.ExecPercent)
			}
			fmt.Fprintln(out)
		}
		if t := r.Tracked; t != nil {
			fmt.Fprintf(out, "tracked tasks: %s\n", t.How)
		}
	}

	r.printScale(out)
	fmt.Fprintln(out, "\nthe bar (see \"The bar\" in BENCHMARKS.md):")
	for _, b := range r.Bar {
		verdict := "MISSED"
		switch {
		case b.Skipped:
			verdict = "not measured"
		case b.Met:
			verdict = "met"
		}
		v := fmt.Sprintf("%.3f %s", b.Value, b.Unit)
		if b.Skipped {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", b.Measure, v, b.Limit, verdict)
	}
	tw.Flush()
	if len(r.ForeignEvents) > 0 {
		fmt.Fprintf(out, "\nother containers' events during the run (someone else used the Engine; figures are noisier):")
		for _, k := range slices.Sorted(maps.Keys(r.ForeignEvents)) {
			fmt.Fprintf(out, " %s %d", k, r.ForeignEvents[k])
		}
		fmt.Fprintln(out)
	}
	var busy []string
	for _, k := range slices.Sorted(maps.Keys(r.Quiet)) {
		if !r.Quiet[k].Quiet {
			busy = append(busy, k)
		}
	}
	if len(busy) > 0 {
		fmt.Fprintf(out, "the machine never got quiet before: %s (measured anyway; figures are noisier)\n", strings.Join(busy, ", "))
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(out, "\nerrors:\n  %s\n", strings.Join(r.Errors, "\n  "))
	}
}

// printScale prints the scale and sweep phases' figures.
func (r *Results) printScale(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if sc := r.Scale; sc != nil {
		fmt.Fprintf(out, "\nscale: worker %s, --concurrency %d: %d Running (started in %.0f s, in waves of %d), then %d tracked\n",
			sc.Worker, sc.Concurrency, sc.Running, sc.StartSeconds, sc.WaveSize, sc.Tracked)
		fmt.Fprintln(tw, "the Engine's own start rate, with\traw create+starts\tper s\tp50 ms\tmax ms\t")
		for _, e := range sc.Engine {
			fmt.Fprintf(tw, "%d running\t%d\t%.2f\t%.0f\t%.0f\t\n", e.Running, e.Starts, e.PerSecond, e.Start.P50, e.Start.Max)
		}
		for _, st := range sc.Stages {
			fmt.Fprintf(tw, "cube: %d → %d running\t%d\t%.2f\t\t\t\n", st.From, st.To, st.To-st.From, st.PerSecond)
		}
		tw.Flush()
		fmt.Fprintln(tw, "GET /tasks\ttasks\tbytes\tp50 ms\tp90 ms\tmax ms\tcube's p50 over this one's (paired)\t")
		for _, l := range []*ListCompare{sc.ListRunning, sc.ListTracked} {
			if l == nil {
				continue
			}
			fmt.Fprintf(tw, "cube\t%d\t%d\t%.2f\t%.2f\t%.2f\t1\t\n", l.Tasks, l.Bytes, l.Cube.P50, l.Cube.P90, l.Cube.Max)
			fmt.Fprintf(tw, "bare encode of the same list (encoding/json)\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.3f (%.3f)\t\n", l.Tasks, l.Bytes, l.Bare.P50, l.Bare.P90, l.Bare.Max, l.Ratio, l.PairedRatio)
			fmt.Fprintf(tw, "bare task.AppendJSON of the same list\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.3f (%.3f)\t\n", l.Tasks, l.Bytes, l.BareAppend.P50, l.BareAppend.P90, l.BareAppend.Max, l.AppendRatio, l.AppendPairedRatio)
		}
		tw.Flush()
		if c := sc.IdleCPU; c != nil {
			fmt.Fprintf(out, "idle CPU with %d running: %.2f s over %.0f s = %.3f %% of a core (exact: %.3f %%)\n", c.Running, c.CPUSeconds, c.Seconds, c.Percent, c.ExecPercent)
		}
		if e := sc.Exits; e != nil {
			fmt.Fprintf(out, "%d exits at once: die event → GET Completed p50 %.2f, p90 %.2f, p99 %.2f, max %.2f ms\n", sc.Exiting, e.P50, e.P90, e.P99, e.Max)
		}
		if k := sc.Restart; k != nil {
			fmt.Fprintf(out, "kill -9 with %d running: /readyz 200 %.3f s after the new process started; %d taken up with their containers, %d still after 12 s, %d containers restarted\n",
				k.Running, k.ReadySeconds, k.TakenUp, k.StillUp, k.Restarted)
		}
		if sc.TrackedSeconds > 0 {
			fmt.Fprintf(out, "tracked tasks made in %.0f s\n", sc.TrackedSeconds)
		}
	}
	if len(r.Sweep) > 0 {
		fmt.Fprintln(out, "\nsweep: bursts on a worker started with each --concurrency, next to the raw SDK at the same concurrency:")
		fmt.Fprintln(tw, "--concurrency\ttasks\trounds\tcube wall p50 s\traw wall p50 s\tratio (paired, Δ ms)\t")
		for _, p := range r.Sweep {
			if b := p.Burst; b != nil {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.2f\t%.3f (%.3f, %+.0f)\t\n", p.Concurrency, b.Tasks, b.Rounds, b.CubeWall.P50/1000, b.RawWall.P50/1000, b.Ratio, b.PairedRatio, b.PairedDiff)
			}
		}
		tw.Flush()
	}
}
