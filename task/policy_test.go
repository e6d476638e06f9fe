package task

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/internal/hostpath"
	"golang.org/x/sys/unix"
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

// With Resolve, a bind source is checked on where its links lead on the host, and a prefix on
// where it leads.
func TestPolicyCheckLinks(t *testing.T) {
	root := linkTree(t, "etc", "/etc")
	if err := os.Symlink("allowed", root+"/linked"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bind, prefix string
		want         []string // nil: allowed
	}{
		{"/allowed/dir:/d", "/allowed", nil},
		{"/allowed/in:/d", "/allowed", nil},
		{"/allowed/in/file:/f:ro", "/allowed", nil},
		{"/allowed/dir/up/in:/d", "/allowed", nil},
		{"/allowed/in/not-yet:/d", "/allowed", nil},
		{"/linked/dir:/d", "/allowed", nil},     // the source's own spelling through a link
		{"/allowed/dir:/d", "/linked", nil},     // the prefix's
		{"/linked/in/file:/d", "/linked/", nil}, // both
		{"/allowed/out:/o", "/allowed", []string{"Task.Binds[0]:", "leads to", root + "/outside"}},
		{"/allowed/out/secret:/o", "/allowed", []string{"Task.Binds[0]:", root + "/outside/secret"}},
		{"/allowed/etc:/e:ro", "/allowed", []string{"Task.Binds[0]:", `"/etc"`}},
		{"/allowed/etc/passwd:/e:ro", "/allowed", []string{"Task.Binds[0]:", `"/etc/passwd"`}},
		{"/allowed/dir/up/out/new:/o", "/allowed", []string{"Task.Binds[0]:", root + "/outside/new"}},
		{"/allowed/dir/up:/d", "/allowed/dir", []string{"Task.Binds[0]:", root + "/allowed\""}},
	}
	for _, tt := range tests {
		p := Policy{AllowBindMounts: []string{root + tt.prefix}, Resolve: hostpath.Resolve}
		tk := validTask()
		tk.Binds = []string{root + tt.bind}
		err := p.Check(tk)
		if tt.want == nil {
			if err != nil {
				t.Errorf("Check(%s) under %s: got %v, want nil", tt.bind, tt.prefix, err)
			}
			continue
		}
		if ErrorCode(err) != EFORBIDDEN {
			t.Errorf("Check(%s) under %s: got %v, want EFORBIDDEN", tt.bind, tt.prefix, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Check(%s) under %s: got %q, want it to contain %q", tt.bind, tt.prefix, err, w)
			}
		}
	}
	// A dangling link on the way is refused: where it would lead is not known.
	if err := os.Symlink("/nonexistent-cube-test", root+"/allowed/dangling"); err != nil {
		t.Fatal(err)
	}
	p := Policy{AllowBindMounts: []string{root + "/allowed"}, Resolve: hostpath.Resolve}
	tk := validTask()
	tk.Binds = []string{root + "/allowed/dangling/x:/x"}
	if err := p.Check(tk); ErrorCode(err) != EFORBIDDEN || !strings.Contains(err.Error(), "Task.Binds[0]:") {
		t.Errorf("Check through a dangling link: got %v, want EFORBIDDEN naming Task.Binds[0]", err)
	}
	// The runtime's check of a pinned source names the field too.
	if err := p.CheckBindTarget(2, "/x", "/etc"); ErrorCode(err) != EFORBIDDEN || !strings.HasPrefix(err.Error(), "Task.Binds[2]: ") {
		t.Errorf("CheckBindTarget: got %v, want EFORBIDDEN naming Task.Binds[2]", err)
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
		{"two binds on one container path", func(t *Task) { t.Binds = []string{"/srv/data/a:/m", "/srv/data/b:/m/"} },
			[]string{"Task.Binds[1]:", "/m is bound already by Binds[0]"}},
		{"bind over /proc", func(t *Task) { t.Binds = []string{"/srv/data:/proc"} }, []string{"Task.Binds[0]:", "must not be in /proc"}},
		{"bind under /sys", func(t *Task) { t.Binds = []string{"/srv/data:/sys/fs/x:ro"} }, []string{"Task.Binds[0]:", "must not be in /sys"}},
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
// the paths are spelled, and, on a real directory tree with symbolic links (one of them
// fuzzed: link names a path under allowed/ and target what it points to), wherever the links
// lead.
func FuzzBindPolicy(f *testing.F) {
	for _, s := range []string{
		"/srv/data:/data", "/srv/data/../etc:/x", "/srv/data/./a:/a:ro", "/srv//data:/d:rw",
		"/srv/database:/db", "/srv/data/..:/x", "/srv/data/...:/x", "/srv/data\x00/a:/a", "/:/",
	} {
		f.Add(s, "/srv/data", "", "")
	}
	for _, s := range [][4]string{
		{"/allowed/l:/x", "/allowed", "l", "/etc"},
		{"/allowed/l/passwd:/x:ro", "/allowed", "l", "/etc"},
		{"/allowed/l/sub:/x", "/allowed", "l", "dir"},
		{"/allowed/l:/x", "/allowed", "l", "../outside"},
		{"/allowed/a/b:/x", "/allowed", "a/b", "../../outside/secret"},
		{"/allowed/l/x:/x", "/allowed", "l", "/nonexistent-cube/x"},
		{"/allowed/l/file:/x", "/allowed/l", "l", "dir"},
		{"/allowed/dir/l/l/l/out:/x", "/allowed/dir", "dir/l", ".."},
		{"/allowed/in/up:/x", "/allowed/dir", "", ""},
		{"/outside:/x", "/allowed/l", "l", "../outside"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, bind, prefix, link, target string) {
		checkBindAsWritten(t, bind, prefix)
		if strings.HasPrefix(bind, "/") && strings.HasPrefix(prefix, "/") && !strings.ContainsRune(link+target, 0) {
			checkBindOnDisk(t, bind, prefix, link, target)
		}
	})
}

// checkBindAsWritten checks a bind against a prefix without resolving links.
func checkBindAsWritten(t *testing.T, bind, prefix string) {
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
}

// checkBindOnDisk checks a bind, with its paths taken under a new directory tree that holds
// allowed/dir/file, outside/secret, the links allowed/in -> dir, allowed/out -> ../outside and
// allowed/dir/up -> .., and the link allowed/LINK -> TARGET, against the prefix, resolving
// links as the worker does. Whatever Check accepts must lie, by the kernel's account of where
// the path leads, under where the kernel says the prefix is; and what does lie there, exists
// and is well formed, Check must accept.
func checkBindOnDisk(t *testing.T, bind, prefix, link, target string) {
	root := linkTree(t, link, target)
	bind, prefix = root+bind, root+prefix
	p := Policy{AllowBindMounts: []string{prefix}, Resolve: hostpath.Resolve}
	b, perr := ParseBind(bind)
	err := p.Check(Task{Image: "x", Binds: []string{bind}})
	switch ErrorCode(err) {
	case "":
		if perr != nil {
			t.Fatalf("Check accepted %q, which ParseBind refuses: %v", bind, perr)
		}
	case EINVALID, EFORBIDDEN:
		if !strings.HasPrefix(err.Error(), "Task.Binds[0]: ") {
			t.Fatalf("Check(%q) under %q: got %q, want an error naming Task.Binds[0]", bind, prefix, err)
		}
	default:
		t.Fatalf("Check(%q) under %q: got %v, want nil, EINVALID or EFORBIDDEN", bind, prefix, err)
	}
	if perr != nil {
		return
	}
	host, exists := kernelPath(t, b.HostPath)
	if host == "" {
		return // a dangling link on the way: the kernel cannot say where it leads
	}
	where, _ := kernelPath(t, path.Clean(prefix))
	under := where != "" && (host == where || strings.HasPrefix(host, where+"/") || where == "/")
	if err == nil && !under {
		t.Fatalf("Check accepted %q under %q (link %q -> %q): the kernel says it leads to %q, outside %q", bind, prefix, link, target, host, where)
	}
	// (An EINVALID refusal is about the bind's form or its container path, not where its host
	// path leads.)
	if ErrorCode(err) == EFORBIDDEN && under && exists {
		t.Fatalf("Check refused %q under %q (link %q -> %q), which leads to %q under %q: %v", bind, prefix, link, target, host, where, err)
	}
}

// linkTree makes the directory tree checkBindOnDisk describes and returns its root, resolved.
func linkTree(t *testing.T, link, target string) string {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"allowed/dir", "outside"} {
		if err := os.MkdirAll(root+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{"allowed/dir/file": "in", "outside/secret": "out"} {
		if err := os.WriteFile(root+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for l, to := range map[string]string{"allowed/in": "dir", "allowed/out": "../outside", "allowed/dir/up": ".."} {
		if err := os.Symlink(to, root+"/"+l); err != nil {
			t.Fatal(err)
		}
	}
	// The fuzzed link, where it can be made: a relative name below allowed/ without "..".
	if link != "" && target != "" && !path.IsAbs(link) && path.Clean(link) == link &&
		!slices.Contains(strings.Split(link, "/"), "..") && len(link) < 200 && len(target) < 1000 {
		at := root + "/allowed/" + link
		if err := os.MkdirAll(path.Dir(at), 0o755); err == nil {
			os.Symlink(target, at)
		}
	}
	return root
}

// kernelPath returns where p leads by the kernel's account: the path of what opening p (its
// longest existing part, when p does not exist, followed by the rest) reaches, and whether p
// exists. It returns "" when a dangling link is on the way.
func kernelPath(t *testing.T, p string) (string, bool) {
	rest := ""
	for q := p; ; q = path.Dir(q) {
		// O_PATH: nothing is really opened (a fuzzed link may lead to any device).
		fd, err := unix.Open(q, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == nil {
			where, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			return path.Join(where, rest), rest == ""
		}
		if _, lerr := os.Lstat(q); lerr == nil || !errors.Is(err, fs.ErrNotExist) || q == "/" {
			return "", false // there, but it cannot be opened: a dangling link, or a loop
		}
		rest = path.Join(path.Base(q), rest)
	}
}
