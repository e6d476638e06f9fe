package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/spf13/cobra"
)

const idHelp = "ID is a task's ID, a unique prefix of it, or the task's name."

func (cc *clientConfig) newLsCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		output *string
		all    bool
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"ps", "list"},
		Short:   "List the worker's tasks that have not ended (-a: all)",
		Long: `List the worker's tasks that have not ended, as docker ps does; with -a, every task the worker
keeps, those that ended Completed or Failed too. A task waiting to restart shows as
"Restarting (EXIT CODE) in 4s". While the Docker Engine does not answer, each state is the last
one seen, marked "(unconfirmed)", and the reason goes to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*output); err != nil {
				return err
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			ts, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if !all {
				ts = slices.DeleteFunc(ts, ended)
			}
			if *output == "json" {
				return writeJSON(stdout, ts)
			}
			if err := writeTaskTable(stdout, ts, time.Now()); err != nil {
				return err
			}
			for _, t := range ts {
				if t.Unconfirmed != "" {
					fmt.Fprintln(stderr, "unconfirmed:", t.Unconfirmed)
					break
				}
			}
			return nil
		},
	}
	output = outputFlag(cmd)
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list every task, those that ended too")
	return cmd
}

// stateOf is a task's state as cube ls shows it: a task waiting to restart shows its last exit
// code and when it restarts, "Restarting (1) in 4s", as docker ps shows a crash loop; a state the
// worker cannot confirm says so.
func stateOf(t task.Task, now time.Time) string {
	s := t.State.String()
	if t.State == task.Scheduled && t.RestartCount > 0 {
		s = fmt.Sprintf("Restarting (%d)", t.ExitCode)
		if at, ok := restartAt(t.Error); ok {
			if d := at.Sub(now); d > 0 {
				s += " in " + roundUp(d)
			} else {
				s += " now"
			}
		}
	}
	if t.Unconfirmed != "" {
		s += " (unconfirmed)"
	}
	return s
}

// restartAt finds when a task waiting to restart restarts, in its Error: "…; back-off:
// restarting in 2s (at 2024-05-01T12:00:02Z)".
func restartAt(msg string) (time.Time, bool) {
	_, rest, ok := strings.Cut(msg, "back-off: restarting in ")
	if !ok {
		return time.Time{}, false
	}
	_, rest, ok = strings.Cut(rest, "(at ")
	if !ok {
		return time.Time{}, false
	}
	stamp, _, _ := strings.Cut(rest, ")")
	at, err := time.Parse(time.RFC3339, stamp)
	return at, err == nil
}

// roundUp writes d in whole seconds, rounded up, or in minutes from 2 minutes on: 4s, 3m.
func roundUp(d time.Duration) string {
	if d >= 2*time.Minute {
		return fmt.Sprintf("%dm", int((d+time.Minute-1)/time.Minute))
	}
	return fmt.Sprintf("%ds", int((d+time.Second-1)/time.Second))
}

// writeTaskTable writes the tasks as cube ls shows them.
func writeTaskTable(w io.Writer, ts []task.Task, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tSTATE\tHEALTH\tPORTS\tRESTARTS\tAGE")
	for _, t := range ts {
		health, p := t.HealthStatus, ports(t, false)
		if t.State == task.Completed || t.State == task.Failed {
			health, p = "", "" // what they were, not what they are
		}
		state := stateOf(t, now)
		if t.Paused {
			state += " (paused)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", task.ShortID(t.ID.String()), orDash(t.Name), t.Image, state,
			orDash(health), orDash(p), t.RestartCount, age(now, received(t)))
	}
	return tw.Flush()
}

func (cc *clientConfig) newInspectCmd(stdout io.Writer) *cobra.Command {
	var output *string
	cmd := &cobra.Command{
		Use:   "inspect ID",
		Short: "Show everything about a task",
		Long:  "Show everything about a task: its spec, its state and its recent history.\n" + idHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*output); err != nil {
				return err
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			t, err := resolve(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if *output == "json" {
				return writeJSON(stdout, t)
			}
			return describe(stdout, t, time.Now())
		},
	}
	output = outputFlag(cmd)
	return cmd
}

// describe writes a task for people, field by field, then its recent history.
func describe(w io.Writer, t task.Task, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	when := func(tm time.Time) string {
		if tm.IsZero() {
			return ""
		}
		return fmt.Sprintf("%s (%s ago)", tm.Local().Format(time.RFC3339), age(now, tm))
	}
	row("ID", t.ID.String())
	row("Name", t.Name)
	row("Image", t.Image)
	row("State", stateOf(t, now))
	if t.HealthStatus != "" {
		h := t.HealthStatus
		if r := t.LastHealthCheck; r != nil && r.Output != "" {
			h += fmt.Sprintf(" (last check %s ago: %s)", age(now, r.Time), r.Output)
		}
		row("Health", h)
	}
	row("Error", t.Error)
	row("Unconfirmed", t.Unconfirmed)
	if t.State == task.Completed || t.State == task.Failed {
		row("Exit code", strconv.Itoa(t.ExitCode))
	}
	if t.ContainerID != "" {
		row("Container", t.ContainerID[:min(12, len(t.ContainerID))])
	}
	row("Ports", ports(t, true))
	row("Started", when(t.StartTime))
	row("Finished", when(t.FinishTime))
	restarts := strconv.Itoa(t.RestartCount)
	if t.RestartPolicy != "" {
		restarts += " (policy " + t.RestartPolicy + ")"
	}
	row("Restarts", restarts)
	if t.Cpu > 0 {
		row("CPU", strconv.FormatFloat(t.Cpu, 'f', -1, 64)+" cores")
	}
	if t.Memory > 0 {
		row("Memory", bytesOf(t.Memory))
	}
	if t.HealthCheck != "" {
		row("Health check", "GET "+t.HealthCheck)
	}
	if len(t.Cmd) > 0 {
		row("Command", strings.Join(t.Cmd, " "))
	}
	for i, kv := range t.Env {
		k := "" // the first line names the field; the rest continue it
		if i == 0 {
			k = "Env:"
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, kv)
	}
	if p := t.Pull; p != nil {
		row("Pull", fmt.Sprintf("%d/%d layers, %s of %s", p.LayersDone, p.Layers, bytesOf(p.Bytes), bytesOf(p.BytesTotal)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Events) == 0 {
		return nil
	}
	fmt.Fprintln(w, "Events:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tTYPE\tMESSAGE")
	for _, r := range t.Events {
		fmt.Fprintf(tw, "  %s\t%s", r.Time.Local().Format("2006-01-02 15:04:05.000"), r.Type)
		if r.Message != "" {
			fmt.Fprintf(tw, "\t%s", r.Message)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// eachTask finds each task args name, in order, calls do with it, and prints its ID once do
// succeeds; it stops at the first error.
func (cc *clientConfig) eachTask(cmd *cobra.Command, args []string, stdout io.Writer, do func(*apiclient.Client, task.Task) error) error {
	c, err := cc.client()
	if err != nil {
		return err
	}
	for _, ref := range args {
		t, err := resolve(cmd.Context(), c, ref)
		if err != nil {
			return err
		}
		if err := do(c, t); err != nil {
			return err
		}
		fmt.Fprintln(stdout, t.ID)
	}
	return nil
}

func (cc *clientConfig) newStopCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "stop ID...",
		Short: "Stop tasks: their containers are stopped and removed, the tasks end Completed",
		Long:  "Stop tasks: their containers are stopped and removed, and the tasks end Completed (one that\nhad already ended, Completed or Failed, keeps its state); none restarts. It prints the ID of\neach task the worker accepted the stop for.\n" + idHelp,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cc.eachTask(cmd, args, stdout, func(c *apiclient.Client, t task.Task) error {
				return c.Stop(cmd.Context(), t.ID)
			})
		},
	}
}

func (cc *clientConfig) newRmCmd(stdout io.Writer) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] ID...",
		Short: "Remove tasks: their containers are removed and the worker forgets them",
		Long:  "Remove tasks that have ended: their containers (kept for their logs) are removed, and the worker\nforgets them. A task that has not ended is refused, as docker rm refuses a running container;\nwith -f it is stopped first. It prints the ID of each task the worker accepted the removal for.\n" + idHelp,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cc.eachTask(cmd, args, stdout, func(c *apiclient.Client, t task.Task) error {
				if !force && !t.State.Ended() {
					return fmt.Errorf("task %s (%s) is %v: stop it first, or remove it with -f", task.ShortID(t.ID.String()), t.Name, t.State)
				}
				return c.Remove(cmd.Context(), t.ID)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a task that has not ended, then remove it")
	return cmd
}

func (cc *clientConfig) newLogsCmd(stdout io.Writer) *cobra.Command {
	var (
		follow, timestamps bool
		tail               int
		since              string
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] ID",
		Short: "Print a task's output",
		Long:  "Print a task's output, stdout and stderr together. It works for a task that has ended, as long as\nits container exists.\n" + idHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cc.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			t, err := resolve(ctx, c, args[0])
			if err != nil {
				return err
			}
			opts := apiclient.LogOptions{Follow: follow, Since: since, Timestamps: timestamps}
			switch {
			case tail == 0:
				opts.Tail = -1 // none of the earlier lines
			case tail > 0:
				opts.Tail = tail
			}
			rc, err := c.Logs(ctx, t.ID, opts)
			if err != nil {
				return err
			}
			defer rc.Close()
			if _, err := io.Copy(stdout, rc); err != nil && !interrupted(ctx) {
				return fmt.Errorf("reading the logs of task %s: %w", label(t), err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new output until the task ends")
	f.IntVar(&tail, "tail", -1, "print only the last N lines (-1: all)")
	f.StringVar(&since, "since", "", "print only output since a time (RFC 3339) or for a duration (10m)")
	f.BoolVarP(&timestamps, "timestamps", "t", false, "prefix each line with the time it was printed")
	return cmd
}

func (cc *clientConfig) newStatsCmd(stdout io.Writer) *cobra.Command {
	var output *string
	cmd := &cobra.Command{
		Use:   "stats [ID]",
		Short: "Show the node's stats, or a task's resource use",
		Long:  "Without an ID, show the worker node's stats: running tasks, memory, disk and load. With an ID,\nshow one sample of the task's CPU, memory, network and block I/O.\n" + idHelp,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*output); err != nil {
				return err
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if len(args) == 0 {
				s, err := c.Stats(ctx)
				if err != nil {
					return err
				}
				if *output == "json" {
					return writeJSON(stdout, s)
				}
				return writeNodeStats(stdout, s)
			}
			t, err := resolve(ctx, c, args[0])
			if err != nil {
				return err
			}
			s, err := c.TaskStats(ctx, t.ID)
			if err != nil {
				return err
			}
			if *output == "json" {
				return writeJSON(stdout, s)
			}
			return writeTaskStats(stdout, t, s)
		},
	}
	output = outputFlag(cmd)
	return cmd
}

// writeNodeStats writes the node's stats as a one-row table.
func writeNodeStats(w io.Writer, s apiclient.Stats) error {
	mem, disk, load := "-", "-", "-"
	if m := s.MemStats; m != nil && m.MemTotal > 0 {
		used := int64(m.MemTotal-m.MemAvailable) * 1024 // meminfo counts kB
		mem = fmt.Sprintf("%s / %s (%d%%)", bytesOf(used), bytesOf(int64(m.MemTotal)*1024), used*100/(int64(m.MemTotal)*1024))
	}
	if d := s.DiskStats; d != nil && d.All > 0 {
		disk = fmt.Sprintf("%s / %s (%d%%)", bytesOf(int64(d.Used)), bytesOf(int64(d.All)), d.Used*100/d.All)
	}
	if l := s.LoadStats; l != nil {
		load = fmt.Sprintf("%.2f %.2f %.2f", l.Last1Min, l.Last5Min, l.Last15Min)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "TASKS\tMEMORY\tDISK\tLOAD 1m 5m 15m")
	fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.TaskCount, mem, disk, load)
	return tw.Flush()
}

// writeTaskStats writes a task's sample as a one-row table, as docker stats does.
func writeTaskStats(w io.Writer, t task.Task, s apiclient.TaskStats) error {
	memPct := "-"
	if s.MemoryLimit > 0 {
		memPct = fmt.Sprintf("%.1f%%", float64(s.MemoryUsage)*100/float64(s.MemoryLimit))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS")
	fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s / %s\t%s\t%s / %s\t%s / %s\t%d\n", task.ShortID(t.ID.String()), orDash(t.Name), s.CPUPercent,
		bytesOf(s.MemoryUsage), bytesOf(s.MemoryLimit), memPct, bytesOf(s.NetworkRx), bytesOf(s.NetworkTx),
		bytesOf(s.BlockRead), bytesOf(s.BlockWrite), s.PIDs)
	return tw.Flush()
}

func (cc *clientConfig) newEventsCmd(stdout io.Writer) *cobra.Command {
	var (
		output *string
		after  int64
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the worker's task events as they happen",
		Long: `Print the worker's task events as they happen, one a line under a header, until interrupted:
each change of a task's state, health or restarts, with its number, the EVENT column. With
--after N, first the events after event N that the worker still keeps (--after 0: all of them).
A broken stream is resumed where it left off. With -o json, each event is one line of JSON, the
data of the stream's message (GET /events).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*output); err != nil {
				return err
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			enc := json.NewEncoder(stdout)
			if *output != "json" {
				fmt.Fprintln(stdout, eventHeader)
			}
			err = c.Watch(ctx, after, func(ev apiclient.Event) error {
				if *output == "json" {
					return enc.Encode(ev)
				}
				_, err := fmt.Fprintln(stdout, eventLine(ev))
				return err
			})
			if err != nil && interrupted(ctx) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().Int64Var(&after, "after", apiclient.Live, "first print the kept events after this event number (0: all kept; -1: only new events)")
	output = outputFlag(cmd)
	return cmd
}

// eventColumns are the columns of cube events, in which eventHeader and eventLine write.
const eventColumns = "%16s  %-29s  %-16s  %-8s  %-13s  %-20s  %s" // event numbers have 16 digits

// eventHeader is the header of cube events' columns; eventLine writes each event under it.
var eventHeader = fmt.Sprintf(eventColumns, "EVENT", "TIME", "NAME", "ID", "TYPE", "STATE", "MESSAGE")

// eventLine is one event as cube events prints it, in fixed-width columns so that a stream lines
// up: the event's number (what --after takes), time, task name and short ID, type, the task's
// state after it (with its health and restarts), and the message.
func eventLine(ev apiclient.Event) string {
	if ev.Type == apiclient.EventReset {
		// No task's: the events in between are lost, and the tasks must be read again.
		return strings.TrimRight(fmt.Sprintf(eventColumns, strconv.FormatInt(ev.Seq, 10),
			ev.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"), "-", "-", ev.Type, "-", ev.Message), " ")
	}
	state := ev.State.String()
	if ev.HealthStatus != "" {
		state += " " + ev.HealthStatus
	}
	if ev.RestartCount > 0 {
		state += fmt.Sprintf(" restarts=%d", ev.RestartCount)
	}
	line := fmt.Sprintf(eventColumns, strconv.FormatInt(ev.Seq, 10), ev.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"),
		orDash(ev.Name), task.ShortID(ev.TaskID.String()), ev.Type, state, ev.Message)
	return strings.TrimRight(line, " ")
}
