package task

import (
	"strings"
	"testing"
	"time"
)

func TestNextRestart(t *testing.T) {
	fail := Outcome{ExitCode: 1}
	ok := Outcome{}
	tests := []struct {
		name    string
		policy  string
		spec    RestartSpec
		o       Outcome
		streak  int
		restart bool
		delay   time.Duration
		reason  string
	}{
		{"no policy", "", RestartSpec{}, fail, 0, false, 0, `"no"`},
		{"no", RestartNo, RestartSpec{}, fail, 0, false, 0, `"no"`},
		{"on-failure, failed", RestartOnFailure, RestartSpec{}, fail, 0, true, time.Second, ""},
		{"on-failure, success", RestartOnFailure, RestartSpec{}, ok, 0, false, 0, "successfully"},
		{"on-failure, OOM", RestartOnFailure, RestartSpec{}, Outcome{ExitCode: 137, OOMKilled: true}, 0, true, time.Second, ""},
		{"on-failure, unhealthy", RestartOnFailure, RestartSpec{}, Outcome{Unhealthy: true}, 0, true, time.Second, ""},
		{"on-failure, start failed", RestartOnFailure, RestartSpec{}, Outcome{StartFailed: true}, 0, true, time.Second, ""},
		{"always, success", RestartAlways, RestartSpec{}, ok, 0, true, time.Second, ""},
		{"unless-stopped, success", RestartUnlessStopped, RestartSpec{}, ok, 0, true, time.Second, ""},
		{"doubling", RestartAlways, RestartSpec{}, fail, 3, true, 8 * time.Second, ""},
		{"cap", RestartAlways, RestartSpec{}, fail, 20, true, 5 * time.Minute, ""},
		{"custom delay and cap", RestartAlways, RestartSpec{Delay: Duration(100 * time.Millisecond), MaxDelay: Duration(300 * time.Millisecond)}, fail, 2, true, 300 * time.Millisecond, ""},
		{"attempts left", RestartOnFailure, RestartSpec{MaxAttempts: 3}, fail, 2, true, 4 * time.Second, ""},
		{"attempts exhausted", RestartOnFailure, RestartSpec{MaxAttempts: 3}, fail, 3, false, 0, "exhausted (3)"},
		{"unlimited", RestartOnFailure, RestartSpec{MaxAttempts: 0}, fail, 1000, true, 5 * time.Minute, ""},
		{"unknown policy", "sometimes", RestartSpec{}, fail, 0, false, 0, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NextRestart(tt.policy, tt.spec, tt.o, tt.streak, 0.5) // jitter 0.5: no spread
			if got.Restart != tt.restart || got.Delay != tt.delay {
				t.Errorf("got restart %v delay %v, want %v %v", got.Restart, got.Delay, tt.restart, tt.delay)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason: got %q, want it to contain %q", got.Reason, tt.reason)
			}
		})
	}
}

func TestBackoffJitterStaysWithinTenPercentAndCap(t *testing.T) {
	spec := RestartSpec{Delay: Duration(time.Second), MaxDelay: Duration(10 * time.Second)}
	tests := []struct {
		streak int
		jitter float64
		want   time.Duration
	}{
		{0, 0, 900 * time.Millisecond},
		{0, 0.999999, 1099999 * time.Microsecond},
		{1, 0, 1800 * time.Millisecond},
		{3, 1 - 1e-9, 8*time.Second + 799999992}, // 8s +10%, just under
		{4, 1 - 1e-9, 10 * time.Second},          // 16s is over the cap
		{4, 0, 10 * time.Second},
	}
	for _, tt := range tests {
		got := Backoff(spec, tt.streak, tt.jitter)
		if diff := got - tt.want; diff < -time.Microsecond || diff > time.Microsecond {
			t.Errorf("Backoff(streak %d, jitter %v) = %v, want %v", tt.streak, tt.jitter, got, tt.want)
		}
	}
}

func TestRestartSpecDefaults(t *testing.T) {
	got := RestartSpec{}.WithDefaults()
	if got.Delay.D() != time.Second || got.MaxDelay.D() != 5*time.Minute || got.ResetAfter.D() != 10*time.Minute {
		t.Fatalf("got %+v, want 1s, 5m, 10m", got)
	}
	if got := (RestartSpec{Delay: Duration(time.Hour)}).WithDefaults(); got.MaxDelay < got.Delay {
		t.Fatalf("MaxDelay %v below Delay %v", got.MaxDelay.D(), got.Delay.D())
	}
}
