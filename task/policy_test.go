package task

import (
	"path"
	"slices"
	"strings"
	"testing"
)

// allowAll grants every kind of host access, with bind mounts under /srv/data and /var/log.
var allowAll = Policy{
	AllowPrivileged: true, AllowHostNetwork: true, AllowHostPID: true, AllowCapAdd: true,
	AllowDevices: true, AllowBindMounts: []string{"/srv/data", "/var/log/"},
}

func TestPolicyCheckForbidden(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Task)
		policy Policy // grants all but what the case asks for
		want   []string
	}{
		{"privileged", func(t *Task) { t.Privileged = true }, without(func(p *Policy) { p.AllowPrivileged = false }),
			[]string{"Task.Privileged:", "--allow-privileged"}},
		{"host network", func(t *Task) { t.NetworkMode = "host"; noPorts(t) }, without(func(p *Policy) { p.AllowHostNetwork = false }),
			[]string{"Task.NetworkMode:", "--allow-host-network"}},
		{"host pid", func(t *Task) { t.PidMode = "host" }, without(func(p *Policy) { p.AllowHostPID = false }),
			[]string{"Task.PidMode:", "--allow-host-pid"}},
		{"cap add", func(t *Task) { t.CapAdd = []string{"NET_ADMIN"} }, without(func(p *Policy) { p.AllowCapAdd = false }),
			[]string{"Task.CapAdd:", "--allow-cap-add"}},
		{"devices", func(t *Task) { t.Devices = []string{"/dev/fuse"} }, without(func(p *Policy) { p.AllowDevices = false }),
			[]string{"Task.Devices:", "--allow-devices"}},
		{"binds", func(t *Task) { t.Binds = []string{"/srv/data:/data"} }, without(func(p *Policy) { p.AllowBindMounts = nil }),
			[]string{"Task.Binds[0]:", "--allow-bind-mounts"}},
		{"bind outside the prefixes", func(t *Task) { t.Binds = []string{"/srv/data/a:/a", "/etc:/etc:ro"} }, allowAll,
			[]string{"Task.Binds[1]:", `"/etc"`, "/srv/data, /var/log/"}},
		{"bind prefix is a whole element", func(t *Task) { t.Binds = []string{"/srv/database:/db"} }, allowAll,
			[]string{"Task.Binds[0]:", `"/srv/database"`}},
		{"everything asked, nothing granted", func(t *Task) {
			t.Privileged, t.PidMode, t.CapAdd = true, "host", []string{"SYS_ADMIN"}
		}, Policy{}, []string{"Task.Privileged:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := validTask()
			tt.mutate(&tk)
			err := tt.policy.Check(tk)
			if code := ErrorCode(err); code != EFORBIDDEN {
				t.Fatalf("Check: got %v (kind %q), want an EFORBIDDEN error", err, code)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message: got %q, want it to contain %q", err, w)
				}
			}
			if tt.policy.AllowBindMounts == nil || len(tk.Binds) == 0 {
				// A kind of access refused: granting it lets the task through.
				if err := allowAll.Check(tk); err != nil {
					t.Errorf("Check with every allowance: got %v, want nil", err)
				}
			}
		})
	}
}

// without returns allowAll changed by f.
func without(f func(*Policy)) Policy {
	p := allowAll
	f(&p)
	return p
}

func noPorts(t *Task) { t.ExposedPorts, t.PortBindings = nil, nil }

func TestPolicyCheckAllowed(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Task)
		policy Policy
	}{
		{"nothing asked, nothing granted", func(*Task) {}, Policy{}},
		{"bridge network", func(t *Task) { t.NetworkMode = "bridge" }, Policy{}},
		{"no network needs no allowance", func(t *Task) { t.NetworkMode = "none"; noPorts(t) }, Policy{}},
		{"privileged", func(t *Task) { t.Privileged = true }, Policy{AllowPrivileged: true}},
		{"host network", func(t *Task) { t.NetworkMode = "host"; noPorts(t) }, Policy{AllowHostNetwork: true}},
		{"host pid", func(t *Task) { t.PidMode = "host" }, Policy{AllowHostPID: true}},
		{"capabilities in every spelling", func(t *Task) { t.CapAdd = []string{"NET_ADMIN", "CAP_SYS_TIME", "cap_bpf", "ALL"} }, Policy{AllowCapAdd: true}},
		{"devices", func(t *Task) { t.Devices = []string{"/dev/fuse", "/dev/sda:/dev/xvda:r", "/dev/null:rw"} }, Policy{AllowDevices: true}},
		{"bind at a prefix", func(t *Task) { t.Binds = []string{"/srv/data:/data"} }, Policy{AllowBindMounts: []string{"/srv/data"}}},
		{"bind under a prefix", func(t *Task) { t.Binds = []string{"/srv/data/a/b:/data:ro", "/var/log/app:/log:rw"} }, allowAll},
		{"bind under a prefix after cleaning", func(t *Task) { t.Binds = []string{"/srv//data/./a/:/data/"} }, allowAll},
		{"bind anywhere", func(t *Task) { t.Binds = []string{"/etc/hosts:/h:ro"} }, Policy{AllowBindMounts: []string{"/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := validTask()
			tt.mutate(&tk)
			if err := tt.policy.Check(tk); err != nil {
				t.Errorf("Check: got %v, want nil", err)
			}
		})
	}
}

func TestPolicyCheckInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Task)
		want   []string
	}{
		{"network mode", func(t *Task) { t.NetworkMode = "container:abc" }, []string{"Task.NetworkMode:", `"container:abc"`}},
		{"host network with ports", func(t *Task) { t.NetworkMode = "host" }, []string{"Task.NetworkMode:", "publishes no ports"}},
		{"no network with a binding", func(t *Task) { t.NetworkMode = "none"; t.ExposedPorts = nil }, []string{"Task.NetworkMode:"}},
		{"pid mode", func(t *Task) { t.PidMode = "container:abc" }, []string{"Task.PidMode:"}},
		{"unknown capability", func(t *Task) { t.CapAdd = []string{"NET_ADMIN", "NET_WIZARD"} }, []string{"Task.CapAdd[1]:", `"NET_WIZARD"`}},
		{"empty capability", func(t *Task) { t.CapAdd = []string{""} }, []string{"Task.CapAdd[0]:"}},
		{"device outside /dev", func(t *Task) { t.Devices = []string{"/etc/shadow"} }, []string{"Task.Devices[0]:", "under /dev/"}},
		{"device climbing out of /dev", func(t *Task) { t.Devices = []string{"/dev/../etc/shadow"} }, []string{"Task.Devices[0]:", `".."`}},
		{"relative device", func(t *Task) { t.Devices = []string{"dev/fuse"} }, []string{"Task.Devices[0]:", "absolute"}},
		{"device bad permissions", func(t *Task) { t.Devices = []string{"/dev/fuse:/dev/fuse:rwx"} }, []string{"Task.Devices[0]:", "permissions"}},
		{"device repeated permission", func(t *Task) { t.Devices = []string{"/dev/fuse:/dev/fuse:rr"} }, []string{"Task.Devices[0]:"}},
		{"device relative container path", func(t *Task) { t.Devices = []string{"/dev/fuse:fuse"} }, []string{"Task.Devices[0]:", "container path"}},
		{"device too many parts", func(t *Task) { t.Devices = []string{"/dev/a:/dev/b:r:w"} }, []string{"Task.Devices[0]:"}},
		{"empty device", func(t *Task) { t.Devices = []string{""} }, []string{"Task.Devices[0]:"}},
		{"bind without container path", func(t *Task) { t.Binds = []string{"/srv/data"} }, []string{"Task.Binds[0]:", "/host/path:/container/path"}},
		{"named volume", func(t *Task) { t.Binds = []string{"data:/data"} }, []string{"Task.Binds[0]:", "absolute"}},
		{"relative container path", func(t *Task) { t.Binds = []string{"/srv/data:data"} }, []string{"Task.Binds[0]:", "container path"}},
		{"bind over the root", func(t *Task) { t.Binds = []string{"/srv/data:/"} }, []string{"Task.Binds[0]:", "must not be /"}},
		{"bind with dot-dot", func(t *Task) { t.Binds = []string{"/srv/data/../../etc:/etc"} }, []string{"Task.Binds[0]:", `".."`}},
		{"bind with dot-dot inside the container", func(t *Task) { t.Binds = []string{"/srv/data:/x/../y"} }, []string{"Task.Binds[0]:", `".."`}},
		{"bind bad mode", func(t *Task) { t.Binds = []string{"/srv/data:/data:z"} }, []string{"Task.Binds[0]:", "ro or rw"}},
		{"bind propagation", func(t *Task) { t.Binds = []string{"/srv/data:/data:ro:rshared"} }, []string{"Task.Binds[0]:"}},
		{"bind NUL", func(t *Task) { t.Binds = []string{"/srv/data\x00:/data"} }, []string{"Task.Binds[0]:"}},
		{"second bind", func(t *Task) { t.Binds = []string{"/srv/data:/a", ":/b"} }, []string{"Task.Binds[1]:", "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := validTask()
			tt.mutate(&tk)
			// Malformed is malformed whatever the worker allows.
			for _, p := range []Policy{{}, allowAll} {
				err := p.Check(tk)
				if code := ErrorCode(err); code != EINVALID {
					t.Fatalf("Check with %+v: got %v (kind %q), want an EINVALID error", p, err, code)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("message: got %q, want it to contain %q", err, w)
					}
				}
			}
		})
	}
}

func TestParseBind(t *testing.T) {
	tests := []struct {
		in   string
		want Bind
	}{
		{"/srv/data:/data", Bind{HostPath: "/srv/data", ContainerPath: "/data"}},
		{"/srv/data/:/data/:ro", Bind{HostPath: "/srv/data", ContainerPath: "/data", ReadOnly: true}},
		{"//srv/./data:/d//e:rw", Bind{HostPath: "/srv/data", ContainerPath: "/d/e"}},
		{"/:/host:ro", Bind{HostPath: "/", ContainerPath: "/host", ReadOnly: true}},
	}
	for _, tt := range tests {
		got, err := ParseBind(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseBind(%q): got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	if got := (Bind{HostPath: "/a", ContainerPath: "/b", ReadOnly: true}).String(); got != "/a:/b:ro" {
		t.Errorf("String: got %q, want /a:/b:ro", got)
	}
}

func TestParseDevice(t *testing.T) {
	tests := []struct {
		in   string
		want Device
	}{
		{"/dev/fuse", Device{"/dev/fuse", "/dev/fuse", "rwm"}},
		{"/dev/sda:/dev/xvda", Device{"/dev/sda", "/dev/xvda", "rwm"}},
		{"/dev/sda:r", Device{"/dev/sda", "/dev/sda", "r"}},
		{"/dev/sda:/dev/xvda:mw", Device{"/dev/sda", "/dev/xvda", "mw"}},
		{"/dev//snd/:/dev/snd/", Device{"/dev/snd", "/dev/snd", "rwm"}},
	}
	for _, tt := range tests {
		got, err := ParseDevice(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDevice(%q): got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeCapability(t *testing.T) {
	for in, want := range map[string]string{"NET_ADMIN": "NET_ADMIN", "cap_net_admin": "NET_ADMIN", "CAP_SYS_ADMIN": "SYS_ADMIN", "all": "ALL"} {
		if got, ok := NormalizeCapability(in); !ok || got != want {
			t.Errorf("NormalizeCapability(%q): got %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "CAP_", "NET ADMIN", "CAP_CAP_NET_ADMIN", "NET_WIZARD"} {
		if got, ok := NormalizeCapability(in); ok {
			t.Errorf("NormalizeCapability(%q): got %q, true; want false", in, got)
		}
	}
}

func TestCleanBindPrefix(t *testing.T) {
	for in, want := range map[string]string{"/srv/data/": "/srv/data", "/": "/", "//var//log": "/var/log"} {
		if got, err := CleanBindPrefix(in); err != nil || got != want {
			t.Errorf("CleanBindPrefix(%q): got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "srv", "/srv/../etc", "/a:b"} {
		if got, err := CleanBindPrefix(in); err == nil {
			t.Errorf("CleanBindPrefix(%q): got %q, nil; want an error", in, got)
		}
	}
}

// FuzzBindPolicy checks that no bind mount the policy accepts reaches outside its prefix, however
// the paths are spelled.
func FuzzBindPolicy(f *testing.F) {
	for _, s := range []string{
		"/srv/data:/data", "/srv/data/../etc:/x", "/srv/data/./a:/a:ro", "/srv//data:/d:rw",
		"/srv/database:/db", "/srv/data/..:/x", "/srv/data/...:/x", "/srv/data\x00/a:/a", "/:/",
	} {
		f.Add(s, "/srv/data")
	}
	f.Fuzz(func(t *testing.T, bind, prefix string) {
		p := Policy{AllowBindMounts: []string{prefix}}
		tk := Task{Image: "x", Binds: []string{bind}}
		err := p.Check(tk)
		switch ErrorCode(err) {
		case "":
		case EINVALID, EFORBIDDEN:
			if !strings.HasPrefix(err.Error(), "Task.Binds[0]: ") {
				t.Fatalf("Check(%q) under %q: got %q, want an error naming Task.Binds[0]", bind, prefix, err)
			}
			return
		default:
			t.Fatalf("Check(%q) under %q: got %v, want nil, EINVALID or EFORBIDDEN", bind, prefix, err)
		}
		b, err := ParseBind(bind)
		if err != nil {
			t.Fatalf("Check accepted %q, which ParseBind refuses: %v", bind, err)
		}
		for _, s := range []string{b.HostPath, b.ContainerPath} {
			if !path.IsAbs(s) || path.Clean(s) != s || slices.Contains(strings.Split(s, "/"), "..") {
				t.Fatalf("Check accepted %q: path %q is not absolute and clean", bind, s)
			}
		}
		clean := path.Clean(prefix)
		if !strings.HasPrefix(prefix, "/") {
			t.Fatalf("Check accepted %q under the relative prefix %q", bind, prefix)
		}
		if clean != "/" && b.HostPath != clean && !strings.HasPrefix(b.HostPath, clean+"/") {
			t.Fatalf("Check accepted %q (host path %q) outside the prefix %q", bind, b.HostPath, prefix)
		}
	})
}
