package task

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func validTask() Task {
	return Task{
		ID:            uuid.New(),
		Name:          "web-1",
		Image:         "cube-echo:latest",
		Cpu:           0.5,
		Memory:        64 << 20,
		ExposedPorts:  PortSet{"7777/tcp": {}},
		PortBindings:  map[string]string{"7777/tcp": "8080"},
		RestartPolicy: "on-failure",
		HealthCheck:   "/health",
		Env:           []string{"A=1", "B="},
		Cmd:           []string{"--listen", ":7777"},
	}
}

func TestValidate(t *testing.T) {
	if err := validTask().Validate(); err != nil {
		t.Fatalf("valid task: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Task)
		want   string // a part of the message, which names the field
	}{
		{"no image", func(t *Task) { t.Image = "" }, "Task.Image: is required"},
		{"uppercase image", func(t *Task) { t.Image = "Cube/Echo" }, "Task.Image"},
		{"image with space", func(t *Task) { t.Image = "cube echo" }, "Task.Image"},
		{"image bad tag", func(t *Task) { t.Image = "echo:" }, "Task.Image"},
		{"name with slash", func(t *Task) { t.Name = "a/b" }, "Task.Name"},
		{"name too long", func(t *Task) { t.Name = strings.Repeat("a", 129) }, "Task.Name"},
		{"negative cpu", func(t *Task) { t.Cpu = -1 }, "Task.Cpu"},
		{"tiny cpu", func(t *Task) { t.Cpu = 0.001 }, "Task.Cpu"},
		{"NaN cpu", func(t *Task) { t.Cpu = math.NaN() }, "Task.Cpu"},
		{"infinite cpu", func(t *Task) { t.Cpu = math.Inf(1) }, "Task.Cpu"},
		{"huge cpu", func(t *Task) { t.Cpu = 1e300 }, "Task.Cpu: must be at most 1e+09 cores"},
		{"negative memory", func(t *Task) { t.Memory = -1 }, "Task.Memory"},
		{"tiny memory", func(t *Task) { t.Memory = 1024 }, "Task.Memory"},
		{"negative disk", func(t *Task) { t.Disk = -5 }, "Task.Disk"},
		{"port without proto", func(t *Task) { t.ExposedPorts = PortSet{"80": {}} }, "Task.ExposedPorts"},
		{"port out of range", func(t *Task) { t.ExposedPorts = PortSet{"70000/tcp": {}} }, "Task.ExposedPorts"},
		{"binding bad key", func(t *Task) { t.PortBindings = map[string]string{"x/tcp": "80"} }, "Task.PortBindings"},
		{"binding bad host port", func(t *Task) { t.PortBindings = map[string]string{"80/tcp": "99999"} }, "Task.PortBindings"},
		{"binding host port with sign", func(t *Task) { t.PortBindings = map[string]string{"7777/tcp": "+18050"} }, "Task.PortBindings"},
		{"binding host port leading zero", func(t *Task) { t.PortBindings = map[string]string{"7777/tcp": "08050"} }, "Task.PortBindings"},
		{"binding host port zero", func(t *Task) { t.PortBindings = map[string]string{"7777/tcp": "0"} }, "Task.PortBindings"},
		{"binding host port space", func(t *Task) { t.PortBindings = map[string]string{"7777/tcp": " 8080"} }, "Task.PortBindings"},
		{"port with sign", func(t *Task) { t.ExposedPorts = PortSet{"+80/tcp": {}} }, "Task.ExposedPorts"},
		{"port leading zero", func(t *Task) { t.ExposedPorts = PortSet{"080/tcp": {}} }, "Task.ExposedPorts"},
		{"restart policy", func(t *Task) { t.RestartPolicy = "sometimes" }, "Task.RestartPolicy"},
		{"health check path", func(t *Task) { t.HealthCheck = "health" }, "Task.HealthCheck"},
		{"restart count", func(t *Task) { t.RestartCount = -1 }, "Task.RestartCount"},
		{"env without =", func(t *Task) { t.Env = []string{"A=1", "B"} }, "Task.Env[1]"},
		{"env empty key", func(t *Task) { t.Env = []string{"=x"} }, "Task.Env[0]"},
		{"cmd NUL", func(t *Task) { t.Cmd = []string{"a\x00b"} }, "Task.Cmd[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := validTask()
			tt.mutate(&tk)
			err := tk.Validate()
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			if ErrorCode(err) != EINVALID {
				t.Errorf("got code %q, want %q", ErrorCode(err), EINVALID)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateImageReferences(t *testing.T) {
	for _, ref := range []string{
		"echo", "cube-echo:latest", "library/echo:1.0", "127.0.0.1:5000/cube/echo:v1",
		"registry.example.com/a/b/c", "echo@sha256:" + strings.Repeat("a", 64), "a__b", "a--b:TAG_1.x",
	} {
		tk := validTask()
		tk.Image = ref
		if err := tk.Validate(); err != nil {
			t.Errorf("image %q: %v", ref, err)
		}
	}
}

func TestCloneSharesNothing(t *testing.T) {
	a := validTask()
	a.HostPorts = PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}}}
	b := a.Clone()
	b.ExposedPorts["1/tcp"] = struct{}{}
	b.PortBindings["7777/tcp"] = "1"
	b.HostPorts["7777/tcp"][0].HostPort = "1"
	b.Env[0] = "changed"
	b.Cmd[0] = "changed"
	if len(a.ExposedPorts) != 1 || a.PortBindings["7777/tcp"] != "8080" ||
		a.HostPorts["7777/tcp"][0].HostPort != "49153" || a.Env[0] != "A=1" || a.Cmd[0] != "--listen" {
		t.Fatalf("changing the clone changed the original: %+v", a)
	}
}

func TestPorts(t *testing.T) {
	tk := Task{ExposedPorts: PortSet{"80/tcp": {}, "53/udp": {}}, PortBindings: map[string]string{"80/tcp": "8080", "9000/tcp": ""}}
	if got, want := tk.Ports(), []string{"53/udp", "80/tcp", "9000/tcp"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// The wire format is the book's: these keys, integers for states, Docker's port shapes.
func TestTaskJSONKeys(t *testing.T) {
	tk := validTask()
	tk.StartTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tk.HostPorts = PortMap{"7777/tcp": {{HostIP: "0.0.0.0", HostPort: "49153"}}}
	b, err := json.Marshal(Event{ID: uuid.New(), State: Scheduled, Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(ev)), []string{"ID", "State", "Task", "Timestamp"}; !slices.Equal(got, want) {
		t.Errorf("event keys: got %v, want %v", got, want)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev["Task"], &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"Cmd", "ContainerID", "Cpu", "Disk", "Env", "Error", "ExitCode", "ExposedPorts", "FinishTime",
		"HealthCheck", "HostPorts", "ID", "Image", "Memory", "Name", "PortBindings", "RestartCount", "RestartPolicy",
		"StartTime", "State"}
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
		t.Errorf("task keys:\ngot  %v\nwant %v", got, want)
	}
	for key, want := range map[string]string{
		"HostPorts":    `{"7777/tcp":[{"HostIp":"0.0.0.0","HostPort":"49153"}]}`,
		"ExposedPorts": `{"7777/tcp":{}}`,
		"PortBindings": `{"7777/tcp":"8080"}`,
		"StartTime":    `"2026-01-02T03:04:05Z"`,
		"State":        `0`,
	} {
		if got := string(m[key]); got != want {
			t.Errorf("%s: got %s, want %s", key, got, want)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	inner := Errorf(ENOTFOUND, "image %q not found", "x")
	outer := Wrap(EINVALID, inner, "bad request")
	if got := ErrorCode(outer); got != EINVALID {
		t.Errorf("ErrorCode: got %q, want %q", got, EINVALID)
	}
	if got, want := ErrorMessage(outer), `bad request: image "x" not found`; got != want {
		t.Errorf("ErrorMessage: got %q, want %q", got, want)
	}
	if got := ErrorCode(errString("boom")); got != EINTERNAL {
		t.Errorf("ErrorCode of a plain error: got %q, want %q", got, EINTERNAL)
	}
	if got := ErrorMessage(errString("secret detail")); got != "internal error" {
		t.Errorf("ErrorMessage of a plain error: got %q, want %q", got, "internal error")
	}
	if ErrorCode(nil) != "" {
		t.Error("ErrorCode(nil) should be empty")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestValidateLifecycleAndHealth(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Task)
		want   string // "" when valid
	}{
		{"restart ok", func(t *Task) { t.Restart = &RestartSpec{MaxAttempts: 3, Delay: Duration(time.Second)} }, ""},
		{"restart negative attempts", func(t *Task) { t.Restart = &RestartSpec{MaxAttempts: -1} }, "Task.Restart.MaxAttempts"},
		{"restart negative delay", func(t *Task) { t.Restart = &RestartSpec{Delay: Duration(-time.Second)} }, "Task.Restart.Delay"},
		{"pull policy", func(t *Task) { t.PullPolicy = "sometimes" }, "Task.PullPolicy"},
		{"pull policy ok", func(t *Task) { t.PullPolicy = PullNever }, ""},
		{"auth without user", func(t *Task) { t.RegistryAuth = &RegistryAuth{Password: "x"} }, "Task.RegistryAuth.Username"},
		{"reservation above limit", func(t *Task) { t.MemoryReservation = t.Memory + 1 }, "Task.MemoryReservation"},
		{"pids negative", func(t *Task) { t.PidsLimit = -1 }, "Task.PidsLimit"},
		{"stop timeout", func(t *Task) { t.StopTimeout = 4000 }, "Task.StopTimeout"},
		{"stop signal ok", func(t *Task) { t.StopSignal = "SIGINT" }, ""},
		{"stop signal number", func(t *Task) { t.StopSignal = "15" }, ""},
		{"stop signal bad", func(t *Task) { t.StopSignal = "sig term" }, "Task.StopSignal"},
		{"stop signal short name", func(t *Task) { t.StopSignal = "TERM" }, ""},
		{"stop signal lowercase", func(t *Task) { t.StopSignal = "sigusr1" }, ""},
		{"stop signal realtime", func(t *Task) { t.StopSignal = "SIGRTMIN+3" }, ""},
		{"stop signal rtmax", func(t *Task) { t.StopSignal = "RTMAX-14" }, ""},
		{"stop signal 64", func(t *Task) { t.StopSignal = "64" }, ""},
		{"stop signal unknown name", func(t *Task) { t.StopSignal = "SIGFOO" }, "Task.StopSignal"},
		{"stop signal realtime out of range", func(t *Task) { t.StopSignal = "RTMIN+99" }, "Task.StopSignal"},
		{"stop signal rtmax out of range", func(t *Task) { t.StopSignal = "RTMAX-15" }, "Task.StopSignal"},
		{"stop signal zero", func(t *Task) { t.StopSignal = "0" }, "Task.StopSignal"},
		{"stop signal 65", func(t *Task) { t.StopSignal = "65" }, "Task.StopSignal"},
		{"stop signal signed", func(t *Task) { t.StopSignal = "+15" }, "Task.StopSignal"},
		{"stop signal leading zero", func(t *Task) { t.StopSignal = "015" }, "Task.StopSignal"},
		{"health both", func(t *Task) { t.Health = &HealthSpec{} }, "Task.Health"},
		{"health http ok", func(t *Task) { t.HealthCheck = ""; t.Health = &HealthSpec{Path: "/health"} }, ""},
		{"health bad type", func(t *Task) { t.HealthCheck = ""; t.Health = &HealthSpec{Type: "udp"} }, "Task.Health.Type"},
		{"health bad path", func(t *Task) { t.HealthCheck = ""; t.Health = &HealthSpec{Path: "health"} }, "Task.Health.Path"},
		{"health exec no command", func(t *Task) { t.HealthCheck = ""; t.Health = &HealthSpec{Type: HealthExec} }, "Task.Health.Command"},
		{"health tcp no port", func(t *Task) {
			t.HealthCheck = ""
			t.ExposedPorts, t.PortBindings = nil, nil
			t.Health = &HealthSpec{Type: HealthTCP}
		}, "Task.Health.Port"},
		{"health tiny interval", func(t *Task) {
			t.HealthCheck = ""
			t.Health = &HealthSpec{Interval: Duration(time.Millisecond)}
		}, "Task.Health.Interval"},
		{"health negative retries", func(t *Task) { t.HealthCheck = ""; t.Health = &HealthSpec{Retries: -1} }, "Task.Health.Retries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := validTask()
			tt.mutate(&tk)
			err := tk.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	var h HealthSpec
	if err := json.Unmarshal([]byte(`{"Interval":"1.5s","Timeout":2}`), &h); err != nil {
		t.Fatal(err)
	}
	if h.Interval.D() != 1500*time.Millisecond || h.Timeout.D() != 2*time.Second {
		t.Fatalf("got %v %v, want 1.5s 2s", h.Interval.D(), h.Timeout.D())
	}
	if err := json.Unmarshal([]byte(`{"Interval":"soon"}`), &h); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("got %v, want an error naming the bad value", err)
	}
	b, _ := json.Marshal(HealthSpec{Interval: Duration(90 * time.Second)})
	if got, want := string(b), `{"Interval":"1m30s"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestRecordsKeepTheLastFifty(t *testing.T) {
	var tk Task
	now := time.Now()
	for i := range 60 {
		tk.AddRecord(now, RecordStarted, "run %d", i)
	}
	if len(tk.Events) != MaxRecords || tk.Events[0].Message != "run 10" || tk.Events[49].Message != "run 59" {
		t.Fatalf("got %d records from %q to %q, want 50 from run 10 to run 59", len(tk.Events), tk.Events[0].Message, tk.Events[len(tk.Events)-1].Message)
	}
}

func TestRedactedDropsCredentials(t *testing.T) {
	tk := validTask()
	tk.RegistryAuth = &RegistryAuth{Username: "u", Password: "secret"}
	r := tk.Redacted()
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), "secret") || r.RegistryAuth != nil {
		t.Fatalf("redacted task still has credentials: %s", b)
	}
	if tk.RegistryAuth == nil || tk.RegistryAuth.Password != "secret" {
		t.Fatal("Redacted changed the original")
	}
}

func TestSaturatingInc(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, 1}, {41, 42}, {math.MaxInt - 1, math.MaxInt}, {math.MaxInt, math.MaxInt}} {
		if got := SaturatingInc(tt.in); got != tt.want {
			t.Errorf("SaturatingInc(%d): got %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestShortID(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "0123456789ab"}, // a container ID
		{"9d7ed580-ea2e-4e2b-a922-17fe18982b46", "9d7ed580"},                                 // a UUID
		{"abc", "abc"},
		{"", ""},
	} {
		if got := ShortID(tc.id); got != tc.want {
			t.Errorf("ShortID(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}
