package main

// The client commands: cube run, ls, inspect, stop, rm, logs, stats and events. They talk to a worker
// through api/client; this file holds what they share: the flags that say which worker and how
// to reach it, finding a task by ID prefix or name, and output helpers.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// defaultWorker is the worker the client commands talk to when neither --worker nor CUBE_WORKER
// names one: the address `cube worker` listens on by default.
const defaultWorker = "127.0.0.1:5556"

// clientConfig is the worker the client commands talk to, and how.
type clientConfig struct {
	getenv    func(string) string
	worker    string
	token     string
	tokenFile string
	caFile    string
	certFile  string
	keyFile   string
}

// addFlags adds the flags that pick the worker and the credentials to cmd. The token's
// environment fallback is read when it is used, so that --help never shows it.
func (cc *clientConfig) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&cc.worker, "worker", "w", envOr(cc.getenv, "CUBE_WORKER", defaultWorker), "the worker to talk to: host:port or a URL [CUBE_WORKER]")
	f.StringVar(&cc.token, "token", "", "bearer token to send to the worker [CUBE_TOKEN]")
	f.StringVar(&cc.tokenFile, "token-file", "", "file holding the bearer token to send to the worker")
	f.StringVar(&cc.caFile, "ca", "", "PEM file of the CA that signed the worker's certificate (a host:port worker then means https)")
	f.StringVar(&cc.certFile, "cert", "", "PEM client certificate to present to the worker (with --key)")
	f.StringVar(&cc.keyFile, "key", "", "PEM key of the client certificate")
}

// client returns a client for the configured worker.
func (cc *clientConfig) client() (*apiclient.Client, error) {
	token := cc.token
	switch {
	case token != "" && cc.tokenFile != "":
		return nil, fmt.Errorf("give --token or --token-file, not both")
	case cc.tokenFile != "":
		b, err := os.ReadFile(cc.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("--token-file %s is empty", cc.tokenFile)
		}
	case token == "":
		token = cc.getenv("CUBE_TOKEN")
	}
	opts := []apiclient.Option{apiclient.WithToken(token)}
	if cc.caFile != "" {
		opts = append(opts, apiclient.WithCAFile(cc.caFile))
	}
	if cc.certFile != "" || cc.keyFile != "" {
		if cc.certFile == "" || cc.keyFile == "" {
			return nil, fmt.Errorf("a client certificate needs both --cert and --key")
		}
		opts = append(opts, apiclient.WithClientCert(cc.certFile, cc.keyFile))
	}
	c, err := apiclient.New(cc.worker, opts...)
	if err != nil {
		return nil, fmt.Errorf("--worker: %s", strings.TrimPrefix(err.Error(), "client: "))
	}
	return c, nil
}

// newClientCmds returns the client commands, each with the flags that pick the worker: --worker
// (-w, or CUBE_WORKER), --token (or CUBE_TOKEN), --token-file, --ca, --cert and --key. They are
// not the root's persistent flags, so that `cube worker --token ...` is an error rather than a
// client flag the daemon ignores.
func newClientCmds(getenv func(string) string, stdout, stderr io.Writer) []*cobra.Command {
	cc := &clientConfig{getenv: getenv}
	cmds := []*cobra.Command{
		cc.newRunCmd(stdout, stderr),
		cc.newLsCmd(stdout),
		cc.newInspectCmd(stdout),
		cc.newStopCmd(stdout),
		cc.newRmCmd(stdout),
		cc.newLogsCmd(stdout),
		cc.newStatsCmd(stdout),
		cc.newEventsCmd(stdout),
	}
	for _, cmd := range cmds {
		cc.addFlags(cmd)
	}
	return cmds
}

// outputFlag adds -o/--output to cmd and returns where its value lands.
func outputFlag(cmd *cobra.Command) *string {
	var o string
	cmd.Flags().StringVarP(&o, "output", "o", "", "output format: json (default: a human-readable text)")
	return &o
}

func checkOutput(o string) error {
	switch o {
	case "", "text", "json":
		return nil
	}
	return fmt.Errorf("-o %s: want json or text", o)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resolve finds the task ref names: a full task ID, the task's name, or a unique prefix of its
// ID. It fails with ENOTFOUND when nothing matches and EINVALID, listing the candidates, when
// several tasks do.
func resolve(ctx context.Context, c *apiclient.Client, ref string) (task.Task, error) {
	if ref == "" {
		return task.Task{}, task.Errorf(task.EINVALID, "the task ID or name is empty")
	}
	if id, err := uuid.Parse(ref); err == nil && len(ref) == 36 {
		return c.Get(ctx, id)
	}
	ts, err := c.List(ctx)
	if err != nil {
		return task.Task{}, err
	}
	var byName, byPrefix []task.Task
	for _, t := range ts {
		if t.Name == ref {
			byName = append(byName, t)
		}
		if strings.HasPrefix(t.ID.String(), strings.ToLower(ref)) {
			byPrefix = append(byPrefix, t)
		}
	}
	switch {
	case len(byName) == 1:
		return byName[0], nil
	case len(byName) > 1:
		return task.Task{}, ambiguous(fmt.Sprintf("the name %q", ref), "give an ID prefix instead", byName)
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return task.Task{}, ambiguous(fmt.Sprintf("the ID prefix %q", ref), "give more of the ID", byPrefix)
	}
	return task.Task{}, task.Errorf(task.ENOTFOUND, "no task has the ID, ID prefix or name %q", ref)
}

func ambiguous(what, advice string, ts []task.Task) error {
	cands := make([]string, len(ts))
	for i, t := range ts {
		cands[i] = fmt.Sprintf("%s (%s, %v)", t.ID, orDash(t.Name), t.State)
	}
	return task.Errorf(task.EINVALID, "%s matches %d tasks; %s: %s", what, len(ts), advice, strings.Join(cands, ", "))
}

// shortID is the first block of a task ID, which tells tasks apart in practice.
func shortID(id uuid.UUID) string { return id.String()[:8] }

// label names a task for people: its name and short ID, or the short ID alone.
func label(t task.Task) string {
	if t.Name == "" {
		return shortID(t.ID)
	}
	return fmt.Sprintf("%s (%s)", t.Name, shortID(t.ID))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ports describes the task's ports: "49153->7777/tcp" for each published port, or, before the
// container runs, what it asks for ("8080->7777/tcp", or "7777/tcp" for a free host port). A port
// Docker published on different host ports for IPv4 and IPv6 shows the IPv4 one; with all, it
// shows every address: "0.0.0.0:49153->7777/tcp, [::]:49154->7777/tcp".
func ports(t task.Task, all bool) string {
	var out []string
	if len(t.HostPorts) > 0 {
		for _, p := range sortedKeys(t.HostPorts) {
			var hosts []string
			add := func(h string) {
				if !slices.Contains(hosts, h) {
					hosts = append(hosts, h)
				}
			}
			for _, b := range t.HostPorts[p] {
				switch {
				case b.HostPort == "":
				case all:
					add(net.JoinHostPort(b.HostIP, b.HostPort))
				case !strings.Contains(b.HostIP, ":"):
					add(b.HostPort)
				}
			}
			if len(hosts) == 0 && !all {
				for _, b := range t.HostPorts[p] { // published on IPv6 only
					if b.HostPort != "" {
						add(b.HostPort)
					}
				}
			}
			if len(hosts) == 0 {
				out = append(out, p)
			}
			for _, h := range hosts {
				out = append(out, h+"->"+p)
			}
		}
		return strings.Join(out, ", ")
	}
	for _, p := range sortPorts(t.Ports()) {
		if h := t.PortBindings[p]; h != "" {
			out = append(out, h+"->"+p)
		} else {
			out = append(out, p)
		}
	}
	return strings.Join(out, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return sortPorts(keys)
}

// sortPorts sorts port keys such as "7777/tcp" by number, then protocol.
func sortPorts(ps []string) []string {
	num := func(p string) int {
		n, _ := strconv.Atoi(strings.Split(p, "/")[0])
		return n
	}
	sort.Slice(ps, func(i, j int) bool {
		if ni, nj := num(ps[i]), num(ps[j]); ni != nj {
			return ni < nj
		}
		return ps[i] < ps[j]
	})
	return ps
}

// received is when the worker accepted the task: its first Record, or failing that its start.
func received(t task.Task) time.Time {
	for _, r := range t.Events {
		if r.Type == task.RecordReceived {
			return r.Time
		}
	}
	if len(t.Events) > 0 {
		return t.Events[0].Time
	}
	return t.StartTime
}

// age says how long ago tm was, in the largest whole unit: 45s, 12m, 5h, 3d.
func age(now, tm time.Time) string {
	if tm.IsZero() {
		return "-"
	}
	d := now.Sub(tm)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// bytesOf writes n bytes in binary units: 512B, 1.5KiB, 64MiB, 2.1GiB.
func bytesOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= unit
		if f < unit || u == "TiB" {
			s := strconv.FormatFloat(f, 'f', 1, 64)
			return strings.TrimSuffix(s, ".0") + u
		}
	}
	return ""
}

// interrupted reports whether the command's context ended, as it does when the user presses ^C:
// an error then says only that, and the command ends quietly.
func interrupted(ctx context.Context) bool { return ctx.Err() != nil }
