package main

// cube wait, version and port.

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	apiclient "github.com/cube-orchestrator/cube/api/client"
	"github.com/cube-orchestrator/cube/task"
	"github.com/spf13/cobra"
)

// exitNotRun is what cube wait prints for a task that failed without its process exiting (its
// image could not be pulled, its container not started): docker run's exit code for that.
const exitNotRun = 125

// pollEvery is how often cube wait and cube run --wait ask for a task.
const pollEvery = 100 * time.Millisecond

func (cc *clientConfig) newWaitCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID...",
		Short: "Wait until tasks end, and print their exit codes",
		Long: `Wait until each task has ended (Completed or Failed), in the order given, and print its exit
code, one a line, as docker wait does. A task waiting to restart has not ended. A task that failed
without its process exiting (its image could not be pulled, its container not started) prints
125, and the reason goes to standard error. cube wait exits 0 once every task has ended,
whatever their exit codes, and 1 when a task cannot be found.
` + idHelp,
		Example: `  cube wait batch-job
  code=$(cube wait 1a2b)`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cc.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var missing int
			for _, ref := range args {
				t, err := resolve(ctx, c, ref)
				if err != nil {
					if interrupted(ctx) {
						return fmt.Errorf("stopped waiting")
					}
					if task.ErrorCode(err) != task.ENOTFOUND && task.ErrorCode(err) != task.EINVALID {
						return err
					}
					fmt.Fprintln(stderr, "cube:", err)
					missing++
					continue
				}
				end, err := waitEnd(ctx, c, t, pollEvery)
				if err != nil {
					if interrupted(ctx) {
						return fmt.Errorf("stopped waiting; task %s goes on (%s)", label(t), t.ID)
					}
					return err
				}
				code := end.ExitCode
				if end.State == task.Failed && code == 0 {
					code = exitNotRun
					fmt.Fprintf(stderr, "task %s Failed without exiting: %s\n", label(end), end.Error)
				}
				fmt.Fprintln(stdout, code)
			}
			if missing > 0 {
				return fmt.Errorf("%d of the %d tasks to wait for were not found", missing, len(args))
			}
			return nil
		},
	}
}

// waitEnd polls the task every poll until it has ended, and returns it then.
func waitEnd(ctx context.Context, c *apiclient.Client, t task.Task, poll time.Duration) (task.Task, error) {
	for {
		cur, err := c.Get(ctx, t.ID)
		if err != nil {
			return t, err
		}
		if ended(cur) {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// ended reports whether the task has ended: it is Completed or Failed.
func ended(t task.Task) bool { return t.State == task.Completed || t.State == task.Failed }

// versionInfo is what cube version -o json prints: the client's build, and the worker's as
// GET /version answers it.
type versionInfo struct {
	Client apiclient.Version
	Worker *apiclient.Version `json:",omitempty"`
}

func (cc *clientConfig) newVersionCmd(stdout io.Writer) *cobra.Command {
	var output *string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version and the worker's",
		Long: `Print the version of this cube binary and that of the worker it talks to (-w). When the worker
cannot be reached, the client's version is printed and the command fails. cube --version prints
the client's version alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(*output); err != nil {
				return err
			}
			info := versionInfo{Client: apiclient.Version{Version: version, Commit: commit}}
			c, err := cc.client()
			var wv apiclient.Version
			if err == nil {
				wv, err = c.Version(cmd.Context())
			}
			if err == nil {
				info.Worker = &wv
			}
			if *output == "json" {
				if werr := writeJSON(stdout, info); werr != nil {
					return werr
				}
				return err
			}
			fmt.Fprintf(stdout, "Client: cube %s (commit %s)\n", version, commit)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "Worker: cube %s (commit %s), named %s, at %s\n", wv.Version, wv.Commit, wv.Name, cc.worker)
			return err
		},
	}
	output = outputFlag(cmd)
	return cmd
}

func (cc *clientConfig) newPortCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "port ID [PORT[/PROTO]]",
		Short: "Print a task's published ports, or where one of its ports is published",
		Long: `Print a task's published ports, as docker port does: with PORT (7777, or 7777/udp), each host
address it is published on, IPv4 first, one a line (0.0.0.0:49153); without, every published
port as "7777/tcp -> 0.0.0.0:49153". It fails when the task publishes no such port (yet: a task
publishes its ports once it runs).
` + idHelp,
		Example: `  curl "$(cube port web 7777 | sed -n 1p)/health"`,
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cc.client()
			if err != nil {
				return err
			}
			t, err := resolve(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			keys := sortedKeys(t.HostPorts)
			if len(args) == 2 {
				key := args[1]
				if !strings.Contains(key, "/") {
					key += "/tcp"
				}
				keys = []string{key}
			}
			var n int
			for _, k := range keys {
				var v4, v6 []string
				for _, b := range t.HostPorts[k] {
					if b.HostPort == "" {
						continue
					}
					if strings.Contains(b.HostIP, ":") {
						v6 = append(v6, net.JoinHostPort(b.HostIP, b.HostPort))
					} else {
						v4 = append(v4, net.JoinHostPort(b.HostIP, b.HostPort))
					}
				}
				for _, a := range append(v4, v6...) {
					n++
					if len(args) == 2 {
						fmt.Fprintln(stdout, a)
					} else {
						fmt.Fprintf(stdout, "%s -> %s\n", k, a)
					}
				}
			}
			if n == 0 && len(args) == 2 {
				return fmt.Errorf("task %s publishes no port %s (it is %v)", label(t), keys[0], t.State)
			}
			return nil
		},
	}
}
