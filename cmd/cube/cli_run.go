package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/go-units"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// runFlags are the flags of cube run.
type runFlags struct {
	file       string
	image      string
	name       string
	env        []string
	publish    []string
	cpu        float64
	memory     string
	restart    string
	healthPath string
	cmd        string
	wait       bool
	output     *string
	spec       task.Task // what task built, when the file is not an event
}

func (cc *clientConfig) newRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] [IMAGE] [-- COMMAND ARGS...]",
		Short: "Start a task on the worker",
		Long: `Start a task on the worker: from a file (-f), from flags, or both (flags override the file).
Words after -- are the task's command. The file holds a task's JSON (examples/task.json), or a
whole task event as POST /tasks takes it (examples/event.json, the shape of the book's sample
files): the event is then sent as it is, its IDs kept where it has them, so that sending it again
changes nothing.

Without --wait, run prints the new task's ID as soon as the worker accepted it. With --wait it
says what it waits for and waits until the task is Running and, when it has a health check,
healthy, showing the progress of an image pull, and prints the outcome. A task that ends Failed
first, or turns unhealthy, makes run fail (exit code 1).`,
		Example: `  cube run --name web -p :7777 --memory 64m --health-path /health --wait cube-echo:latest
  cube run --image cube-echo:latest -e GREETING=hi -p 8080:7777 -- --listen :7777
  cube run -f examples/task.json --wait`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*f.output); err != nil {
				return err
			}
			ev, err := f.event(cmd, args)
			if err != nil {
				return err
			}
			c, err := cc.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var got task.Task
			if ev != nil {
				got, err = c.Submit(ctx, *ev)
			} else {
				got, err = c.Start(ctx, f.spec)
			}
			if err != nil {
				return err
			}
			if !f.wait {
				if *f.output == "json" {
					return writeJSON(stdout, got)
				}
				_, err := fmt.Fprintln(stdout, got.ID)
				return err
			}
			final, err := waitTask(ctx, c, got, stderr, newProgress(stderr, isTerminal(stderr), got.Image), pollEvery)
			if err != nil && interrupted(ctx) {
				return fmt.Errorf("stopped waiting; task %s goes on (%s)", label(got), got.ID)
			}
			if err != nil {
				return err
			}
			if *f.output == "json" {
				if err := writeJSON(stdout, final); err != nil {
					return err
				}
			}
			unhealthy := final.State == task.Running && final.HealthStatus == task.HealthUnhealthy
			if *f.output != "json" && final.State != task.Failed && !unhealthy {
				fmt.Fprintln(stdout, outcome(final))
			}
			if final.State == task.Failed || unhealthy {
				return fmt.Errorf("%s", outcome(final))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read the task from this JSON file")
	fl.StringVar(&f.image, "image", "", "the image to run")
	fl.StringVar(&f.name, "name", "", "the task's name")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "an environment variable, KEY=VALUE (repeatable)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port, HOST:CONTAINER (8080:7777, :7777 for a free host port, 7777/udp) (repeatable)")
	fl.Float64Var(&f.cpu, "cpu", 0, "CPU limit in cores (0.5 is half a core)")
	fl.StringVar(&f.memory, "memory", "", "memory limit, such as 256m or 1g (binary units)")
	fl.StringVar(&f.restart, "restart", "", "restart policy: no, on-failure, always or unless-stopped")
	fl.StringVar(&f.healthPath, "health-path", "", "HTTP path checked on the task's first port, such as /health")
	fl.StringVar(&f.cmd, "cmd", "", "the task's command, split on spaces (or give it after --)")
	fl.BoolVar(&f.wait, "wait", false, "wait until the task runs (and is healthy, with a health check) or ends, and print the outcome")
	f.output = outputFlag(cmd)
	return cmd
}

// fileEvent is a task event in a -f file, as POST /tasks takes it; its IDs may be left out.
type fileEvent struct {
	ID        string
	State     task.State
	Timestamp string
	Task      fileTask
}

// fileTask is the task of a fileEvent: a task.Task whose ID may be left out.
type fileTask struct {
	ID string
	task.Task
}

// event builds what the flags and arguments ask for: an event to send as it is when the -f file
// holds one, and otherwise nil, with the task in f.spec.
func (f *runFlags) event(cmd *cobra.Command, args []string) (*task.Event, error) {
	var (
		t  task.Task
		ev *task.Event
	)
	if f.file != "" {
		var err error
		if t, ev, err = readTaskFile(f.file); err != nil {
			return nil, err
		}
	}
	t, err := f.task(cmd, args, t)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		f.spec = t
		return nil, nil
	}
	id := ev.Task.ID
	ev.Task = t
	ev.Task.ID = id
	return ev, nil
}

// readTaskFile reads a -f file: a task, or a task event (an object with a Task key), which it
// returns too, its missing IDs made up.
func readTaskFile(file string) (task.Task, *task.Event, error) {
	var t task.Task
	b, err := os.ReadFile(file)
	if err != nil {
		return t, nil, fmt.Errorf("-f: %w", err)
	}
	var keys map[string]json.RawMessage
	if json.Unmarshal(b, &keys) == nil && keys["Task"] != nil {
		var fe fileEvent
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fe); err != nil {
			return t, nil, fmt.Errorf("-f %s: not a task event: %v", file, strings.TrimPrefix(err.Error(), "json: "))
		}
		ev := &task.Event{ID: uuid.New(), State: fe.State, Task: fe.Task.Task}
		ev.Task.ID = uuid.New()
		for _, id := range []struct {
			field, s string
			to       *uuid.UUID
		}{{"ID", fe.ID, &ev.ID}, {"Task.ID", fe.Task.ID, &ev.Task.ID}} {
			if id.s == "" {
				continue
			}
			u, err := uuid.Parse(id.s)
			if err != nil {
				return t, nil, fmt.Errorf("-f %s: %s: %q is not a UUID", file, id.field, id.s)
			}
			*id.to = u
		}
		if fe.Timestamp != "" {
			if ev.Timestamp, err = time.Parse(time.RFC3339Nano, fe.Timestamp); err != nil {
				return t, nil, fmt.Errorf("-f %s: Timestamp: %q is not an RFC 3339 time", file, fe.Timestamp)
			}
		}
		return ev.Task, ev, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return t, nil, fmt.Errorf("-f %s: not a task: %v", file, strings.TrimPrefix(err.Error(), "json: "))
	}
	return t, nil, nil
}

// task applies the flags and arguments to t, the file's task or an empty one.
func (f *runFlags) task(cmd *cobra.Command, args []string, t task.Task) (task.Task, error) {
	before, after := args, []string(nil)
	if dash := cmd.ArgsLenAtDash(); dash >= 0 {
		before, after = args[:dash], args[dash:]
	}
	changed := cmd.Flags().Changed
	switch {
	case len(before) > 1:
		return t, fmt.Errorf("unexpected arguments %q: give the task's command after --", before[1:])
	case len(before) == 1 && changed("image"):
		return t, fmt.Errorf("give the image once: as an argument or with --image")
	case len(before) == 1:
		t.Image = before[0]
	case changed("image"):
		t.Image = f.image
	}
	if changed("name") {
		t.Name = f.name
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return t, fmt.Errorf("-e %q: want KEY=VALUE", kv)
		}
		t.Env = append(t.Env, kv)
	}
	for _, p := range f.publish {
		port, host, err := parsePublish(p)
		if err != nil {
			return t, err
		}
		if t.ExposedPorts == nil {
			t.ExposedPorts = task.PortSet{}
		}
		t.ExposedPorts[port] = struct{}{}
		if host != "" {
			if t.PortBindings == nil {
				t.PortBindings = map[string]string{}
			}
			t.PortBindings[port] = host
		}
	}
	if changed("cpu") {
		t.Cpu = f.cpu
	}
	if changed("memory") {
		n, err := units.RAMInBytes(f.memory)
		if err != nil || n < 0 {
			return t, fmt.Errorf("--memory %q: want a size such as 256m or 1g", f.memory)
		}
		t.Memory = n
	}
	if changed("restart") {
		t.RestartPolicy = f.restart
	}
	if changed("health-path") {
		t.HealthCheck = f.healthPath
	}
	switch {
	case changed("cmd") && len(after) > 0:
		return t, fmt.Errorf("give the command once: with --cmd or after --")
	case changed("cmd"):
		t.Cmd = strings.Fields(f.cmd)
	case len(after) > 0:
		t.Cmd = after
	}
	if t.Image == "" {
		return t, fmt.Errorf("no image: give one as an argument, with --image, or in the -f file")
	}
	return t, nil
}

// parsePublish parses a -p value, HOST:CONTAINER, into the container port key ("7777/tcp") and
// the host port ("" for a free one).
func parsePublish(s string) (port, host string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("-p %q: %s; want HOST:CONTAINER such as 8080:7777, :7777 or 7777/udp", s, why)
	}
	cont := s
	if i := strings.LastIndex(s, ":"); i >= 0 {
		host, cont = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return bad("a host address cannot be given")
		}
	}
	num, proto, hasProto := strings.Cut(cont, "/")
	if !hasProto {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return bad(fmt.Sprintf("protocol %q is not tcp, udp or sctp", proto))
	}
	if n, err := strconv.Atoi(num); err != nil || n < 1 || n > 65535 {
		return bad(fmt.Sprintf("container port %q is not a port number", num))
	}
	if host != "" {
		if n, err := strconv.Atoi(host); err != nil || n < 1 || n > 65535 {
			return bad(fmt.Sprintf("host port %q is not a port number", host))
		}
	}
	return num + "/" + proto, host, nil
}

// waitTask says on w what it waits for, then polls the task every poll until it is Running
// and, when it has a health check, no longer starting, or has ended, showing pull progress on p,
// and returns it as it is then. It says on w why the task waits to restart, and when the worker
// cannot confirm its state (the Docker Engine does not answer).
func waitTask(ctx context.Context, c *apiclient.Client, t task.Task, w io.Writer, p *progress, poll time.Duration) (task.Task, error) {
	defer p.end()
	checked := t.HealthCheck != "" || t.Health != nil
	what := "Running"
	if checked {
		what = "Running and healthy"
	}
	fmt.Fprintf(w, "waiting for task %s to be %s\n", label(t), what)
	var said string // the last note written
	note := func(s string) {
		if s != "" && s != said {
			p.end()
			fmt.Fprintln(w, s)
			said = s
		}
	}
	for {
		cur, err := c.Get(ctx, t.ID)
		if err != nil {
			return t, err
		}
		switch {
		case cur.Unconfirmed != "":
			note("still waiting: " + cur.Unconfirmed)
		case cur.State == task.Completed || cur.State == task.Failed:
			return cur, nil
		case cur.State == task.Running && (cur.HealthStatus == "" && !checked || cur.HealthStatus == task.HealthHealthy || cur.HealthStatus == task.HealthUnhealthy):
			return cur, nil
		case cur.State == task.Running && cur.HealthStatus == task.HealthStarting && !checked:
			checked = true // the image's own HEALTHCHECK
			note(fmt.Sprintf("task %s is Running; waiting for its health check", label(cur)))
		case cur.State == task.Scheduled && cur.RestartCount > 0:
			note(fmt.Sprintf("task %s: %s", label(cur), cur.Error))
		}
		p.show(cur.Pull, time.Now())
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// outcome is the one line cube run --wait prints about a task that runs or ended.
func outcome(t task.Task) string {
	switch t.State {
	case task.Running:
		state := "Running"
		switch t.HealthStatus {
		case task.HealthHealthy:
			state += " and healthy"
		case task.HealthUnhealthy:
			state += " but unhealthy"
			if r := t.LastHealthCheck; r != nil && r.Output != "" {
				state += " (" + r.Output + ")"
			}
		}
		if p := ports(t, false); p != "" {
			return fmt.Sprintf("task %s is %s, ports %s", label(t), state, p)
		}
		return fmt.Sprintf("task %s is %s", label(t), state)
	case task.Failed:
		why := t.Error
		if why == "" {
			why = fmt.Sprintf("exit code %d", t.ExitCode)
		}
		return fmt.Sprintf("task %s Failed: %s", label(t), why)
	case task.Completed:
		return fmt.Sprintf("task %s Completed, exit code %d", label(t), t.ExitCode)
	}
	return fmt.Sprintf("task %s is %v", label(t), t.State)
}

// progress shows how an image pull comes along: on a terminal, one line rewritten in place; to a
// file or pipe, a plain line when a layer is done or at most every second.
type progress struct {
	w      io.Writer
	tty    bool
	image  string
	last   string    // the line shown last
	lastAt time.Time // when
	layers int       // LayersDone then
	open   bool      // a terminal line is not yet ended
}

func newProgress(w io.Writer, tty bool, image string) *progress {
	return &progress{w: w, tty: tty, image: image}
}

func (p *progress) show(pp *task.PullProgress, now time.Time) {
	if pp == nil {
		return
	}
	line := fmt.Sprintf("pulling %s: %d/%d layers, %s", p.image, pp.LayersDone, pp.Layers, bytesOf(pp.Bytes))
	if pp.BytesTotal > 0 {
		line += fmt.Sprintf(" of %s (%d%%)", bytesOf(pp.BytesTotal), min(100, pp.Bytes*100/pp.BytesTotal))
	}
	if line == p.last {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.open = true
	} else {
		if p.last != "" && pp.LayersDone == p.layers && now.Sub(p.lastAt) < time.Second {
			return
		}
		fmt.Fprintln(p.w, line)
	}
	p.last, p.lastAt, p.layers = line, now, pp.LayersDone
}

// end ends a line left open on a terminal.
func (p *progress) end() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
