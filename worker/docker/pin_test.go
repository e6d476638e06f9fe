package docker_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/internal/hostpath"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
)

// pinRuntime returns a Runtime that allows bind mounts under prefix and pins them in pinDir.
func pinRuntime(t *testing.T, prefix, pinDir string) (*docker.Runtime, string) {
	t.Helper()
	return newRuntimeWith(t, docker.Options{PinDir: pinDir, Policy: task.Policy{AllowBindMounts: []string{prefix}, Resolve: hostpath.Resolve}})
}

// Start hands the Engine a pin of each bind source, not its path, and releases the pin once the
// container runs; the container sees the source.
func TestStartPinsBindSources(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"allowed/data", "outside"} {
		if err := os.MkdirAll(root+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(root+"/allowed/data/inside", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", root+"/allowed/out"); err != nil {
		t.Fatal(err)
	}
	pins := t.TempDir() + "/pins"
	rt, name := pinRuntime(t, root+"/allowed", pins)

	tk := echoTask("--sleep", "5m")
	tk.Binds = []string{root + "/allowed/data:/data:ro"}
	c, err := rt.Start(ctx(t), tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := testenv.Docker(t).ContainerInspect(ctx(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b := info.HostConfig.Binds; len(b) != 1 || !strings.HasPrefix(b[0], pins+"/") || !strings.HasSuffix(b[0], ":/data:ro") {
		t.Errorf("Binds: got %v, want a pin under %s read-only at /data", b, pins)
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/data", info.State.Pid))
	if err != nil || len(entries) != 1 || entries[0].Name() != "inside" {
		t.Errorf("the container's /data: got %v, %v; want the file inside", entries, err)
	}
	if dirs, _ := os.ReadDir(pins); len(dirs) != 1 {
		t.Fatalf("pin directory: got %v, want the runtime's own", dirs)
	} else if left, _ := os.ReadDir(pins + "/" + dirs[0].Name()); len(left) != 0 {
		t.Errorf("pins after the start: got %d, want none", len(left))
	}

	for _, tt := range []struct {
		bind string
		code task.Code
		want []string
	}{
		{"/allowed/out:/o", task.EFORBIDDEN, []string{"Task.Binds[0]:", root + "/outside"}},
		{"/allowed/out/../data:/o", task.EINVALID, []string{"Task.Binds[0]:"}},
		{"/allowed/nothing:/o", task.EINVALID, []string{"Task.Binds[0]:", "does not exist"}},
	} {
		bad := echoTask("--sleep", "5m")
		bad.Binds = []string{root + tt.bind}
		_, err := rt.Start(ctx(t), bad, nil)
		if task.ErrorCode(err) != tt.code {
			t.Errorf("Start with %s: got %v, want %s", tt.bind, err, tt.code)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Start with %s: got %q, want it to contain %q", tt.bind, err, w)
			}
		}
	}
	// A second bind that fails releases the first one's pin.
	two := echoTask("--sleep", "5m")
	two.Binds = []string{root + "/allowed/data:/a", root + "/allowed/out:/b"}
	if _, err := rt.Start(ctx(t), two, nil); task.ErrorCode(err) != task.EFORBIDDEN || !strings.Contains(err.Error(), "Task.Binds[1]:") {
		t.Errorf("Start with the second bind outside: got %v, want EFORBIDDEN naming Task.Binds[1]", err)
	}
	dirs, _ := os.ReadDir(pins)
	if left, _ := os.ReadDir(pins + "/" + dirs[0].Name()); len(left) != 0 {
		t.Errorf("pins after refused starts: got %d, want none", len(left))
	}
	if cs := testenv.Containers(t, docker.LabelWorker+"="+name); len(cs) != 1 {
		t.Errorf("containers: got %d, want only the allowed one", len(cs))
	}
}

// A runtime refuses binds its policy does not allow, devices as bind sources, and a pin
// directory that tasks could bind themselves.
func TestStartRefusesBinds(t *testing.T) {
	none, _ := newRuntime(t)
	tk := echoTask("--sleep", "5m")
	tk.Binds = []string{t.TempDir() + ":/data"}
	if _, err := none.Start(ctx(t), tk, nil); task.ErrorCode(err) != task.EFORBIDDEN || !strings.Contains(err.Error(), "--allow-bind-mounts") {
		t.Errorf("Start with a bind and no allowance: got %v, want EFORBIDDEN naming --allow-bind-mounts", err)
	}

	dev, _ := pinRuntime(t, "/dev", t.TempDir()+"/pins")
	tk.Binds = []string{"/dev/null:/null"}
	if _, err := dev.Start(ctx(t), tk, nil); task.ErrorCode(err) != task.EFORBIDDEN || !strings.Contains(err.Error(), "device") {
		t.Errorf("Start binding /dev/null: got %v, want EFORBIDDEN: a device", err)
	}

	prefix := t.TempDir()
	inside, _ := pinRuntime(t, prefix, prefix+"/pins")
	tk.Binds = []string{prefix + ":/data"}
	if _, err := inside.Start(ctx(t), tk, nil); err == nil || !strings.Contains(err.Error(), "pin directory") {
		t.Errorf("Start with the pin directory under the prefix: got %v, want it refused", err)
	}
	if _, err := os.Stat(prefix + "/pins"); err == nil {
		t.Error("the pin directory under the prefix was made")
	}
}
