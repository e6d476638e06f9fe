package task

import (
	"encoding/json"
	"maps"
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
		{"negative memory", func(t *Task) { t.Memory = -1 }, "Task.Memory"},
		{"tiny memory", func(t *Task) { t.Memory = 1024 }, "Task.Memory"},
		{"negative disk", func(t *Task) { t.Disk = -5 }, "Task.Disk"},
		{"port without proto", func(t *Task) { t.ExposedPorts = PortSet{"80": {}} }, "Task.ExposedPorts"},
		{"port out of range", func(t *Task) { t.ExposedPorts = PortSet{"70000/tcp": {}} }, "Task.ExposedPorts"},
		{"binding bad key", func(t *Task) { t.PortBindings = map[string]string{"x/tcp": "80"} }, "Task.PortBindings"},
		{"binding bad host port", func(t *Task) { t.PortBindings = map[string]string{"80/tcp": "99999"} }, "Task.PortBindings"},
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
