package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/internal/namelock"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/docker/go-units"
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
	root.Version = fmt.Sprintf("%s (commit %s)", version, commit)
	root.SetVersionTemplate("cube {{.Version}}\n")
	cc := &clientConfig{getenv: getenv}
	cc.addFlags(root) // -w, --token, ...: anywhere on the line
	root.AddCommand(newWorkerCmd(getenv, stderr))
	root.AddCommand(newClientCmds(cc, stdout, stderr)...) // run, wait, version, port, ls, inspect, stop, logs, stats, events (cli.go)
	return root
}

// workerGCPercent is the worker's GOGC when its environment sets none.
const workerGCPercent = 50

var tuned sync.Once

// tuneRuntime sets the Go runtime up for a worker, once per process (the first worker a process
// runs decides; a real one runs one): the collector at workerGCPercent unless GOGC is set, so
// that the heap grows half, not all, of what is live before a collection (the node's memory is
// for its tasks; see "Configuration" in the README); and, without --enable-debug, no sampling of
// allocations for a heap profile no one can read (its table of call stacks alone is ~1.5 MB).
func tuneRuntime(enableDebug bool) {
	tuned.Do(func() {
		if _, set := os.LookupEnv("GOGC"); !set {
			debug.SetGCPercent(workerGCPercent)
		}
		if !enableDebug {
			runtime.MemProfileRate = 0
		}
	})
}

func newWorkerCmd(getenv func(string) string, stderr io.Writer) *cobra.Command {
	var cfg workerConfig
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the worker daemon",
		Long: `Run the worker daemon: serve the task API and run tasks on the local Docker Engine.

Flags fall back to environment variables: CUBE_WORKER_HOST, CUBE_WORKER_PORT, CUBE_WORKER_NAME,
CUBE_DATA_DIR, and CUBE_TOKEN / CUBE_READ_TOKEN (the tokens themselves) for --token-file /
--read-token-file.

State (tasks, accepted events and stops) is kept on disk, by default in /var/lib/cube/NAME as
root and in $XDG_STATE_HOME/cube/NAME or ~/.local/state/cube/NAME otherwise; --in-memory keeps
none, and a crash then loses accepted work that has no container yet.
The Docker Engine is found as the docker CLI finds it (DOCKER_HOST, or the default socket).
On SIGINT or SIGTERM the daemon stops serving and exits; containers keep running.
Go's garbage collector runs at GOGC=50 (less memory, a little more CPU) unless GOGC is set.

Security: the worker drives Docker, which is root on this machine. It refuses to listen on an
address other than loopback unless clients must authenticate (a token, or client certificates
with --tls-client-ca), or --insecure says that is intended. Tasks get no host access
(privileged mode, host network or PID namespace, added capabilities, devices, bind mounts)
unless an --allow-* flag grants that kind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level, err := parseLevel(cfg.logLevel)
			if err != nil {
				return err
			}
			format, _ := cmd.Flags().GetString("log-format")
			log, err := newLogger(stderr, format, level)
			if err != nil {
				return err
			}
			tuneRuntime(cfg.enableDebug)
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
	f.Float64Var(&cfg.reserveCPU, "reserve-cpu", 0, "cores kept for the host: tasks may claim the machine's CPUs less these")
	f.StringVar(&cfg.reserveMemory, "reserve-memory", "0", "memory kept for the host (e.g. 512m, 2g): tasks may claim the machine's memory less this")
	f.StringVar(&cfg.dataDir, "data-dir", envOr(getenv, "CUBE_DATA_DIR", ""), "keep tasks and accepted events in DIR/cube.db (bbolt); default /var/lib/cube/NAME as root, else $XDG_STATE_HOME/cube/NAME or ~/.local/state/cube/NAME [CUBE_DATA_DIR]")
	f.BoolVar(&cfg.inMemory, "in-memory", false, "keep no state on disk: a crash loses accepted tasks not yet running and acknowledged stops")
	f.StringVar(&cfg.lockDir, "lock-dir", envOr(getenv, "CUBE_LOCK_DIR", namelock.DefaultDir(getenv, os.Geteuid())),
		"directory of the locks that keep two workers from using one name on one Docker Engine; every worker on the host must use the same [CUBE_LOCK_DIR]")
	f.BoolVar(&cfg.reapOrphans, "reap-orphans", true, "remove labelled containers with no task behind them after --orphan-grace; false only reports them")
	f.DurationVar(&cfg.orphanGrace, "orphan-grace", time.Minute, "how long a container may be an orphan before it is removed")
	f.IntVar(&cfg.keepEnded, "keep-ended", 100, "ended tasks kept at most; beyond it the longest-ended are removed with their containers")
	f.DurationVar(&cfg.keepEndedFor, "keep-ended-for", 24*time.Hour, "how long an ended task is kept before it is removed with its container")
	f.StringVar(&cfg.logMaxSize, "log-max-size", "10m", "a task container's log file is rotated at this size (json-file max-size)")
	f.IntVar(&cfg.logMaxFiles, "log-max-files", 3, "log files kept per task container, the current one included (json-file max-file)")
	f.DurationVar(&cfg.imageKeep, "image-keep", 24*time.Hour, "an image this worker pulled is removed once no task has used it for this long; images it did not pull are never touched")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.String("log-format", "text", "log format: text (logfmt) or json")

	f.StringVar(&cfg.tokenFile, "token-file", "", "file holding the bearer token for full access [CUBE_TOKEN holds the token itself]")
	f.StringVar(&cfg.readTokenFile, "read-token-file", "", "file holding a bearer token for read-only access (GET) [CUBE_READ_TOKEN holds the token itself]")
	cfg.token, cfg.readToken = getenv("CUBE_TOKEN"), getenv("CUBE_READ_TOKEN")
	f.BoolVar(&cfg.enableDebug, "enable-debug", false, "serve Go's runtime profiles (net/http/pprof) under /debug/pprof/, behind the API's authentication")
	f.BoolVar(&cfg.insecure, "insecure", false, "allow listening on a non-loopback address without authentication")
	f.StringVar(&cfg.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM); needs --tls-key")
	f.StringVar(&cfg.tlsKey, "tls-key", "", "the private key (PEM) of --tls-cert")
	f.StringVar(&cfg.tlsClientCA, "tls-client-ca", "", "require client certificates signed by this CA (PEM): mutual TLS")

	f.BoolVar(&cfg.policy.AllowPrivileged, "allow-privileged", false, "let tasks run privileged containers")
	f.BoolVar(&cfg.policy.AllowHostNetwork, "allow-host-network", false, "let tasks use the host's network (NetworkMode host)")
	f.BoolVar(&cfg.policy.AllowHostPID, "allow-host-pid", false, "let tasks use the host's PID namespace (PidMode host)")
	f.BoolVar(&cfg.policy.AllowCapAdd, "allow-cap-add", false, "let tasks add Linux capabilities (CapAdd)")
	f.BoolVar(&cfg.policy.AllowDevices, "allow-devices", false, "let tasks map host devices (Devices)")
	f.StringSliceVar(&cfg.policy.AllowBindMounts, "allow-bind-mounts", nil, "let tasks bind-mount host paths under these `PATH_PREFIX`es (comma-separated, absolute)")
	// Hidden: tests shorten them; an operator should not need to.
	f.DurationVar(&cfg.readHeaderTimeout, "read-header-timeout", defaultReadHeaderTimeout, "bound on a request's TLS handshake and header")
	f.DurationVar(&cfg.requestTimeout, "request-timeout", api.DefaultRequestTimeout, "bound on a request's body, and again on its answer")
	f.DurationVar(&cfg.gcInterval, "gc-interval", time.Minute, "how often ended tasks are looked at for removal")
	f.IntVar(&cfg.maxTasks, "max-tasks", 10000, "tasks tracked at most")
	f.MarkHidden("gc-interval")
	f.MarkHidden("max-tasks")
	f.DurationVar(&cfg.reconcileInterval, "reconcile-interval", worker.DefaultReconcileInterval, "how often to compare Docker's containers with the tasks, the safety net under Docker's event stream")
	f.MarkHidden("read-header-timeout")
	f.MarkHidden("request-timeout")
	// The client flags are the root's, and so inherited, but the worker refuses them: its help
	// does not show them.
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		for _, f := range clientFlags {
			if fl := c.InheritedFlags().Lookup(f.name); fl != nil {
				fl.Hidden = true
			}
		}
		c.Root().HelpFunc()(c, args)
	})
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := refuseClientFlags(cmd); err != nil {
			return err
		}
		if cfg.port < 0 || cfg.port > 65535 {
			if !cmd.Flags().Changed("port") {
				return fmt.Errorf("CUBE_WORKER_PORT=%q is not a port number", getenv("CUBE_WORKER_PORT"))
			}
			return fmt.Errorf("--port %d is not a port number (0 to 65535)", cfg.port)
		}
		if cfg.readHeaderTimeout <= 0 || cfg.requestTimeout <= 0 {
			return fmt.Errorf("--read-header-timeout and --request-timeout must be positive")
		}
		if cfg.concurrency < 1 {
			return fmt.Errorf("--concurrency must be at least 1, got %d", cfg.concurrency)
		}
		if cfg.orphanGrace <= 0 {
			return fmt.Errorf("--orphan-grace must be positive, got %v", cfg.orphanGrace)
		}
		if cfg.keepEnded < 1 {
			return fmt.Errorf("--keep-ended must be at least 1, got %d", cfg.keepEnded)
		}
		if cfg.keepEndedFor <= 0 || cfg.gcInterval <= 0 || cfg.imageKeep <= 0 {
			return fmt.Errorf("--keep-ended-for, --image-keep and --gc-interval must be positive")
		}
		if cfg.reconcileInterval <= 0 {
			return fmt.Errorf("--reconcile-interval must be positive, got %v", cfg.reconcileInterval)
		}
		if cfg.maxTasks < 1 {
			return fmt.Errorf("--max-tasks must be at least 1, got %d", cfg.maxTasks)
		}
		if n, err := units.RAMInBytes(cfg.logMaxSize); err != nil || n < 1 {
			return fmt.Errorf("--log-max-size %q: want a size such as 10m", cfg.logMaxSize)
		}
		if cfg.logMaxFiles < 1 {
			return fmt.Errorf("--log-max-files must be at least 1, got %d", cfg.logMaxFiles)
		}
		if cfg.reserveCPU < 0 {
			return fmt.Errorf("--reserve-cpu must not be negative, got %g", cfg.reserveCPU)
		}
		if n, err := units.RAMInBytes(cfg.reserveMemory); err != nil || n < 0 {
			return fmt.Errorf("--reserve-memory %q: want a size such as 512m or 2g", cfg.reserveMemory)
		}
		if cfg.lockDir == "" {
			return fmt.Errorf("--lock-dir must not be empty")
		}
		if cfg.name == "" {
			return fmt.Errorf("--name is empty and the hostname is unknown; give the worker a name")
		}
		switch {
		case cfg.inMemory && cmd.Flags().Changed("data-dir"):
			return fmt.Errorf("--in-memory and --data-dir exclude each other")
		case cfg.inMemory:
			cfg.dataDir = "" // the flag beats CUBE_DATA_DIR
		case cfg.dataDir == "":
			dir, err := defaultDataDir(getenv, os.Geteuid(), cfg.name)
			if err != nil {
				return err
			}
			cfg.dataDir = dir
		}
		for i, p := range cfg.policy.AllowBindMounts {
			clean, err := task.CleanBindPrefix(p)
			if err != nil {
				return fmt.Errorf("--allow-bind-mounts: %v", err)
			}
			if err := outsidePins(clean); err != nil {
				return err
			}
			cfg.policy.AllowBindMounts[i] = clean
		}
		return nil
	}
	return cmd
}

// outsidePins refuses a bind prefix other than "/" that holds the directory where bind sources
// are pinned (as written or resolved): tasks could reach the pins and swap them.
func outsidePins(prefix string) error {
	if prefix == "/" {
		return nil // every path is allowed anyway
	}
	for _, p := range []string{prefix, resolvedOr(prefix)} {
		if hostpath.DefaultDir == p || strings.HasPrefix(hostpath.DefaultDir, p+"/") {
			return fmt.Errorf("--allow-bind-mounts %s holds %s, where the worker pins bind sources; tasks must not reach it", prefix, hostpath.DefaultDir)
		}
	}
	return nil
}

func resolvedOr(p string) string {
	if r, err := hostpath.Resolve(p); err == nil {
		return r
	}
	return p
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
