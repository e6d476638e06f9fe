package task

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzPortsAndSignals gives any string as a host port, a container port and a stop signal. What
// validation accepts must be what the Docker Engine reads the way the client meant it: ports 1
// to 65535 that print back as they were written, and signals that are a number 1 to 64 or a
// known name. Nothing may panic, and every refusal names its field.
func FuzzPortsAndSignals(f *testing.F) {
	for _, s := range []string{"8080", "+18050", "08050", "0", "65535", "65536", " 80", "SIGTERM", "term", "SIGFOO",
		"RTMIN+3", "RTMIN+99", "RTMAX-14", "15", "64", "65", "-1", "0x10", "١٢", "sigrtmin+15"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		base := Task{Image: "cube-echo:latest", ExposedPorts: PortSet{"7777/tcp": {}}}

		bound := base.Clone()
		bound.PortBindings = map[string]string{"7777/tcp": s}
		if err := bound.Validate(); err == nil {
			if n, err := strconv.Atoi(s); s != "" && (err != nil || strconv.Itoa(n) != s || n < 1 || n > 65535) {
				t.Fatalf("host port %q accepted", s)
			}
		} else if !strings.HasPrefix(ErrorMessage(err), "Task.PortBindings") {
			t.Fatalf("host port %q: refused with %q, want it to name Task.PortBindings", s, err)
		}

		exposed := base.Clone()
		exposed.ExposedPorts = PortSet{s + "/tcp": {}}
		if err := exposed.Validate(); err == nil {
			if n, err := strconv.Atoi(s); err != nil || strconv.Itoa(n) != s || n < 1 || n > 65535 {
				t.Fatalf("container port %q accepted", s)
			}
		}

		signalled := base.Clone()
		signalled.StopSignal = s
		if err := signalled.Validate(); err == nil && s != "" {
			if n, err := strconv.Atoi(s); err == nil {
				if strconv.Itoa(n) != s || n < 1 || n > 64 {
					t.Fatalf("stop signal %q accepted", s)
				}
			} else if !knownSignalName(s) {
				t.Fatalf("stop signal %q accepted", s)
			}
		} else if err != nil && !strings.HasPrefix(ErrorMessage(err), "Task.StopSignal") {
			t.Fatalf("stop signal %q: refused with %q, want it to name Task.StopSignal", s, err)
		}
	})
}

// knownSignalName is the oracle: the name, without SIG and in upper case, is one of Linux's.
func knownSignalName(s string) bool {
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	for _, n := range strings.Fields(`ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT
		SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX`) {
		if name == n {
			return true
		}
	}
	if rest, ok := strings.CutPrefix(name, "RTMIN+"); ok {
		n, err := strconv.Atoi(rest)
		return err == nil && strconv.Itoa(n) == rest && n >= 1 && n <= 15
	}
	if rest, ok := strings.CutPrefix(name, "RTMAX-"); ok {
		n, err := strconv.Atoi(rest)
		return err == nil && strconv.Itoa(n) == rest && n >= 1 && n <= 14
	}
	return false
}
