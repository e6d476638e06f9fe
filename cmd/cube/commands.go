package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "cube",
		Short:         "cube runs containers for an orchestrator: a node agent driving the Docker Engine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newWorkerCmd(getenv, stderr), newVersionCmd(stdout))
	return root
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(stdout, "cube %s (commit %s)\n", version, commit)
			return err
		},
	}
}

func newWorkerCmd(getenv func(string) string, stderr io.Writer) *cobra.Command {
	var cfg workerConfig
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the worker daemon",
		Long: `Run the worker daemon: serve the task API and run tasks on the local Docker Engine.

Flags fall back to environment variables: CUBE_WORKER_HOST, CUBE_WORKER_PORT, CUBE_WORKER_NAME.
The Docker Engine is found as the docker CLI finds it (DOCKER_HOST, or the default socket).
On SIGINT or SIGTERM the daemon stops serving and exits; containers keep running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level, err := parseLevel(cfg.logLevel)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			return runWorker(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.host, "host", "H", envOr(getenv, "CUBE_WORKER_HOST", "127.0.0.1"), "address to listen on [CUBE_WORKER_HOST]")
	port, err := strconv.Atoi(envOr(getenv, "CUBE_WORKER_PORT", "5556"))
	if err != nil {
		port = -1 // reported by validation, which names the variable
	}
	f.IntVarP(&cfg.port, "port", "p", port, "port to listen on; 0 picks a free one [CUBE_WORKER_PORT]")
	f.StringVarP(&cfg.name, "name", "n", envOr(getenv, "CUBE_WORKER_NAME", hostname), "the worker's name [CUBE_WORKER_NAME]")
	f.IntVar(&cfg.concurrency, "concurrency", 4, "container starts under way at once")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if cfg.port < 0 || cfg.port > 65535 {
			if !cmd.Flags().Changed("port") {
				return fmt.Errorf("CUBE_WORKER_PORT=%q is not a port number", getenv("CUBE_WORKER_PORT"))
			}
			return fmt.Errorf("--port %d is not a port number (0 to 65535)", cfg.port)
		}
		if cfg.concurrency < 1 {
			return fmt.Errorf("--concurrency must be at least 1, got %d", cfg.concurrency)
		}
		if cfg.name == "" {
			return fmt.Errorf("--name is empty and the hostname is unknown; give the worker a name")
		}
		return nil
	}
	return cmd
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
