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

// clientFlags are the flags addFlags adds, which `cube worker` refuses, each with what to use
// instead. (--token-file is the worker's own flag too, with the same meaning.)
var clientFlags = []struct{ name, instead string }{
	{"worker", "the worker listens on --host and --port"},
	{"token", "the worker takes its token from --token-file or CUBE_TOKEN"},
	{"ca", "the worker serves TLS with --tls-cert and --tls-key"},
	{"cert", "the worker serves TLS with --tls-cert and --tls-key"},
	{"key", "the worker serves TLS with --tls-cert and --tls-key"},
}

// addFlags adds the flags that pick the worker and the credentials to cmd, as persistent flags,
// so that they may stand anywhere on the line. The token's environment fallback is read when it
// is used, so that --help never shows it.
func (cc *clientConfig) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVarP(&cc.worker, "worker", "w", envOr(cc.getenv, "CUBE_WORKER", defaultWorker), "the worker to talk to: host:port or a URL [CUBE_WORKER]")
	f.StringVar(&cc.token, "token", "", "bearer token to send to the worker [CUBE_TOKEN]")
	f.StringVar(&cc.tokenFile, "token-file", "", "file holding the bearer token to send to the worker")
	f.StringVar(&cc.caFile, "ca", "", "PEM file of the CA that signed the worker's certificate (a host:port worker then means https)")
	f.StringVar(&cc.certFile, "cert", "", "PEM client certificate to present to the worker (with --key)")
	f.StringVar(&cc.keyFile, "key", "", "PEM key of the client certificate")
}

// client returns a client for the configured worker.
func (cc *clientConfig) client() (*apiclient.Client, error) {
	token, err := cc.bearer()
	if err != nil {
		return nil, err
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

// bearer returns the token to send: --token, the contents of --token-file, or CUBE_TOKEN.
func (cc *clientConfig) bearer() (string, error) {
	token := cc.token
	switch {
	case token != "" && cc.tokenFile != "":
		return "", fmt.Errorf("give --token or --token-file, not both")
	case cc.tokenFile != "":
		b, err := os.ReadFile(cc.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return "", fmt.Errorf("--token-file %s is empty", cc.tokenFile)
		}
	case token == "":
		token = cc.getenv("CUBE_TOKEN")
	}
	return token, nil
}

// newClientCmds returns the client commands. The flags that pick the worker are cc's, the root's
// persistent flags (see addFlags).
func newClientCmds(cc *clientConfig, stdout, stderr io.Writer) []*cobra.Command {
	cmds := []*cobra.Command{
		cc.newRunCmd(stdout, stderr),
		cc.newWaitCmd(stdout, stderr),
		cc.newVersionCmd(stdout),
		cc.newPortCmd(stdout),
		cc.newLsCmd(stdout, stderr),
		cc.newInspectCmd(stdout),
		cc.newStopCmd(stdout),
		cc.newRmCmd(stdout),
		cc.newLogsCmd(stdout),
		cc.newStatsCmd(stdout),
		cc.newEventsCmd(stdout),
	}
	for _, cmd := range cmds {
		runE := cmd.RunE
		cmd.RunE = func(cmd *cobra.Command, args []string) error { return cc.explain(runE(cmd, args)) }
	}
	return cmds
}

// explain turns a 401 into what to do about it when no token was given.
func (cc *clientConfig) explain(err error) error {
	if !apiclient.IsUnauthorized(err) {
		return err
	}
	if token, terr := cc.bearer(); terr == nil && token == "" {
		return fmt.Errorf("the worker wants a token: pass --token or --token-file (or set CUBE_TOKEN)")
	}
	return fmt.Errorf("the worker refused the token: %w", err)
}

// refuseClientFlags returns an error when a client flag was given to cmd, which is not a
// client command.
func refuseClientFlags(cmd *cobra.Command) error {
	for _, f := range clientFlags {
		if cmd.Flags().Changed(f.name) {
			return fmt.Errorf("--%s is a client flag, for the commands that talk to a worker; %s", f.name, f.instead)
		}
	}
	return nil
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
// ID. Of tasks that share a name (an ended task's name may be taken again) it picks the one that
// has not ended, or else the newest. It fails with ENOTFOUND when nothing matches and EINVALID, listing the candidates, when
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
	case len(byName) > 1:
		// A name is unique among the tasks that have not ended: one of them holds it, or else
		// every one ended, and the newest had it last.
		if i := slices.IndexFunc(byName, func(t task.Task) bool { return !ended(t) }); i >= 0 {
			return byName[i], nil
		}
		return byName[len(byName)-1], nil
	case len(byName) == 1:
		return byName[0], nil
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

// label names a task for people: its name and short ID, or the short ID alone.
func label(t task.Task) string {
	if t.Name == "" {
		return task.ShortID(t.ID.String())
	}
	return fmt.Sprintf("%s (%s)", t.Name, task.ShortID(t.ID.String()))
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
