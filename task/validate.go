package task

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The restart policies a task may ask for.
const (
	RestartNo            = "no"
	RestartOnFailure     = "on-failure"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped"
)

// MinMemory is the smallest memory limit the Docker Engine accepts.
const MinMemory = 6 << 20

// MaxCpu is the most cores a task may ask for: far beyond any machine, and small enough that
// the Docker Engine's NanoCPUs (an int64 of 1e-9 cores) holds it.
const MaxCpu = 1e9

// maxNameLen bounds a task name so that the container name derived from it stays readable.
const maxNameLen = 128

var (
	// The image reference grammar of github.com/distribution/reference, which the Docker Engine
	// uses: [domain[:port]/]path[/path...][:tag][@digest].
	referenceRE = func() *regexp.Regexp {
		alnum := `[a-z0-9]+`
		sep := `(?:[._]|__|[-]+)`
		path := alnum + `(?:` + sep + alnum + `)*`
		domainComp := `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		host := `(?:` + domainComp + `(?:\.` + domainComp + `)*|\[[a-fA-F0-9:]+\])`
		domain := host + `(?::[0-9]+)?`
		name := `(?:` + domain + `/)?` + path + `(?:/` + path + `)*`
		tag := `[\w][\w.-]{0,127}`
		digest := `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
		return regexp.MustCompile(`^(` + name + `)(?::` + tag + `)?(?:@` + digest + `)?$`)
	}()
	// Docker's rule for container names, which task names follow.
	nameRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	envKeyRE  = regexp.MustCompile(`^[^=\x00]+$`)
	protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true}
)

// Validate checks the task's spec: the fields a client chooses. It returns an *Error of kind
// EINVALID naming the first field that is wrong and why, or nil.
func (t Task) Validate() error {
	if t.Image == "" {
		return invalid("Image", "is required")
	}
	if err := validateImage(t.Image); err != nil {
		return err
	}
	if t.Name != "" && (len(t.Name) > maxNameLen || !nameRE.MatchString(t.Name)) {
		return invalid("Name", "%q must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and have at most %d characters", t.Name, maxNameLen)
	}
	if math.IsNaN(t.Cpu) || math.IsInf(t.Cpu, 0) || t.Cpu < 0 {
		return invalid("Cpu", "must be a non-negative number of cores, got %v", t.Cpu)
	}
	if t.Cpu > 0 && t.Cpu < 0.01 {
		return invalid("Cpu", "must be 0 (no limit) or at least 0.01 cores, got %v", t.Cpu)
	}
	if t.Cpu > MaxCpu {
		return invalid("Cpu", "must be at most %g cores, got %v", float64(MaxCpu), t.Cpu)
	}
	if t.Memory < 0 {
		return invalid("Memory", "must not be negative, got %d", t.Memory)
	}
	if t.Memory > 0 && t.Memory < MinMemory {
		return invalid("Memory", "must be 0 (no limit) or at least %d bytes (6 MiB), got %d", MinMemory, t.Memory)
	}
	if t.Disk < 0 {
		return invalid("Disk", "must not be negative, got %d", t.Disk)
	}
	for p := range t.ExposedPorts {
		if err := validatePort(p); err != nil {
			return invalid("ExposedPorts", "%v", err)
		}
	}
	for p, host := range t.PortBindings {
		if err := validatePort(p); err != nil {
			return invalid("PortBindings", "%v", err)
		}
		if host == "" {
			continue
		}
		if _, ok := portNumber(host); !ok {
			return invalid("PortBindings", "host port %q for %q must be a number from 1 to 65535, in plain decimal", host, p)
		}
	}
	switch t.RestartPolicy {
	case "", RestartNo, RestartOnFailure, RestartAlways, RestartUnlessStopped:
	default:
		return invalid("RestartPolicy", "%q is not one of \"no\", \"on-failure\", \"always\", \"unless-stopped\"", t.RestartPolicy)
	}
	if t.HealthCheck != "" && !strings.HasPrefix(t.HealthCheck, "/") {
		return invalid("HealthCheck", "%q must be an HTTP path starting with /", t.HealthCheck)
	}
	if t.HealthCheck != "" && len(t.Ports()) == 0 {
		return invalid("HealthCheck", "is checked on the task's first port, and the task exposes none")
	}
	if t.RestartCount < 0 {
		return invalid("RestartCount", "must not be negative, got %d", t.RestartCount)
	}
	for i, kv := range t.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE.MatchString(k) || strings.ContainsRune(kv, 0) {
			return invalid(fmt.Sprintf("Env[%d]", i), "%q must have the form KEY=value", kv)
		}
	}
	for i, arg := range t.Cmd {
		if strings.ContainsRune(arg, 0) {
			return invalid(fmt.Sprintf("Cmd[%d]", i), "must not contain a NUL byte")
		}
	}
	if err := t.validateLifecycle(); err != nil {
		return err
	}
	return t.validateHealth()
}

func (t Task) validateLifecycle() error {
	if r := t.Restart; r != nil {
		switch {
		case r.MaxAttempts < 0:
			return invalid("Restart.MaxAttempts", "must not be negative (0 is unlimited), got %d", r.MaxAttempts)
		case r.Delay < 0:
			return invalid("Restart.Delay", "must not be negative, got %v", r.Delay.D())
		case r.MaxDelay < 0:
			return invalid("Restart.MaxDelay", "must not be negative, got %v", r.MaxDelay.D())
		case r.ResetAfter < 0:
			return invalid("Restart.ResetAfter", "must not be negative, got %v", r.ResetAfter.D())
		case r.Delay.D() > maxRestartDuration || r.MaxDelay.D() > maxRestartDuration || r.ResetAfter.D() > maxRestartDuration:
			return invalid("Restart", "Delay, MaxDelay and ResetAfter must be at most %v", maxRestartDuration)
		}
	}
	switch t.PullPolicy {
	case "", PullIfNotPresent, PullAlways, PullNever:
	default:
		return invalid("PullPolicy", "%q is not one of \"if-not-present\", \"always\", \"never\"", t.PullPolicy)
	}
	if a := t.RegistryAuth; a != nil && a.Username == "" {
		return invalid("RegistryAuth.Username", "is required with RegistryAuth")
	}
	if t.MemoryReservation < 0 {
		return invalid("MemoryReservation", "must not be negative, got %d", t.MemoryReservation)
	}
	if t.Memory > 0 && t.MemoryReservation > t.Memory {
		return invalid("MemoryReservation", "%d is above Memory %d; a reservation is a soft limit below the hard one", t.MemoryReservation, t.Memory)
	}
	if t.PidsLimit < 0 {
		return invalid("PidsLimit", "must not be negative (0 is unlimited), got %d", t.PidsLimit)
	}
	if t.StopTimeout < 0 || t.StopTimeout > 3600 {
		return invalid("StopTimeout", "must be from 0 to 3600 seconds, got %d", t.StopTimeout)
	}
	if t.StopSignal != "" && !ValidSignal(t.StopSignal) {
		return invalid("StopSignal", "%q is not a Linux signal: want a name such as SIGTERM, TERM or RTMIN+3, or a number from 1 to 64", t.StopSignal)
	}
	return nil
}

// maxRestartDuration bounds the restart back-off settings.
const maxRestartDuration = 24 * time.Hour

// signals are the Linux signal names the Docker Engine knows (moby/sys/signal's SignalMap), without
// the SIG prefix; RTMIN+n and RTMAX-n are added in init.
var signals = map[string]bool{
	"ABRT": true, "ALRM": true, "BUS": true, "CHLD": true, "CLD": true, "CONT": true, "FPE": true,
	"HUP": true, "ILL": true, "INT": true, "IO": true, "IOT": true, "KILL": true, "PIPE": true,
	"POLL": true, "PROF": true, "PWR": true, "QUIT": true, "SEGV": true, "STKFLT": true, "STOP": true,
	"SYS": true, "TERM": true, "TRAP": true, "TSTP": true, "TTIN": true, "TTOU": true, "URG": true,
	"USR1": true, "USR2": true, "VTALRM": true, "WINCH": true, "XCPU": true, "XFSZ": true,
	"RTMIN": true, "RTMAX": true,
}

func init() {
	for i := 1; i <= 15; i++ {
		signals["RTMIN+"+strconv.Itoa(i)] = true
	}
	for i := 1; i <= 14; i++ {
		signals["RTMAX-"+strconv.Itoa(i)] = true
	}
}

// ValidSignal reports whether s names a Linux signal as the Docker Engine reads a StopSignal: a
// name with or without the SIG prefix, in any case (SIGTERM, term, RTMIN+3), or a number from 1
// to 64 in plain decimal. 0, RTMIN+99, SIGFOO and "+15" are not signals.
func ValidSignal(s string) bool {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		n, ok := plainDecimal(s)
		return ok && n >= 1 && n <= 64
	}
	return signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
}

// plainDecimal parses s as a number written in plain decimal, as a person writes it: digits only,
// no sign, no leading zero, at most 9 digits.
func plainDecimal(s string) (int, bool) {
	if s == "" || len(s) > 9 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + int(c-'0')
	}
	return n, true
}

// portNumber parses a port number, 1 to 65535 in plain decimal.
func portNumber(s string) (int, bool) {
	n, ok := plainDecimal(s)
	return n, ok && n >= 1 && n <= 65535
}

// SaturatingInc returns n+1, or n when that would overflow: a counter that stops at its maximum
// rather than turning negative.
func SaturatingInc(n int) int {
	if n == math.MaxInt {
		return n
	}
	return n + 1
}

func (t Task) validateHealth() error {
	h := t.Health
	if h == nil {
		return nil
	}
	if t.HealthCheck != "" {
		return invalid("Health", "give either HealthCheck (an HTTP path) or Health, not both")
	}
	switch h.Type {
	case "", HealthHTTP:
		if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
			return invalid("Health.Path", "%q must start with /", h.Path)
		}
	case HealthTCP:
	case HealthExec:
		if len(h.Command) == 0 {
			return invalid("Health.Command", "is required for an exec check")
		}
	default:
		return invalid("Health.Type", "%q is not one of \"http\", \"tcp\", \"exec\"", h.Type)
	}
	if h.Type != HealthExec {
		if h.Port < 0 || h.Port > 65535 {
			return invalid("Health.Port", "must be a port from 1 to 65535, got %d", h.Port)
		}
		if h.Port == 0 && len(t.Ports()) == 0 {
			return invalid("Health.Port", "is required: the task exposes no port to check")
		}
	}
	switch {
	case h.Interval < 0 || (h.Interval > 0 && h.Interval.D() < 10*time.Millisecond):
		return invalid("Health.Interval", "must be 0 (default 10s) or at least 10ms, got %v", h.Interval.D())
	case h.Timeout < 0:
		return invalid("Health.Timeout", "must not be negative, got %v", h.Timeout.D())
	case h.Retries < 0:
		return invalid("Health.Retries", "must not be negative, got %d", h.Retries)
	case h.StartPeriod < 0:
		return invalid("Health.StartPeriod", "must not be negative, got %v", h.StartPeriod.D())
	}
	return nil
}

func validateImage(ref string) error {
	m := referenceRE.FindStringSubmatch(ref)
	if m == nil {
		return invalid("Image", "%q is not a valid image reference (want [registry/]name[:tag][@digest], lowercase name)", ref)
	}
	if len(m[1]) > 255 {
		return invalid("Image", "repository name must have at most 255 characters")
	}
	return nil
}

// validatePort checks a container port key such as "7777/tcp".
func validatePort(p string) error {
	num, proto, ok := strings.Cut(p, "/")
	if !ok || !protocols[proto] {
		return fmt.Errorf("port %q must have the form PORT/tcp, PORT/udp or PORT/sctp", p)
	}
	if _, ok := portNumber(num); !ok {
		return fmt.Errorf("port %q must be a number from 1 to 65535, in plain decimal", p)
	}
	return nil
}

func invalid(field, format string, args ...any) *Error {
	return Errorf(EINVALID, "Task.%s: %s", field, fmt.Sprintf(format, args...))
}
