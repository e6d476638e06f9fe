package nodestats

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestReadRealNode(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs a Linux /proc")
	}
	s, err := Reader{}.Read() // zero Reader: /proc and /
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if s.MemStats == nil || s.MemStats.MemTotal == 0 {
		t.Errorf("MemTotal: got %+v, want > 0", s.MemStats)
	} else if s.MemStats.MemFree > s.MemStats.MemTotal {
		t.Errorf("MemFree %d > MemTotal %d", s.MemStats.MemFree, s.MemStats.MemTotal)
	}
	if d := s.DiskStats; d == nil || d.All == 0 {
		t.Errorf("Disk All: got %+v, want > 0", d)
	} else if d.Used+d.Free > d.All {
		t.Errorf("Disk Used %d + Free %d > All %d", d.Used, d.Free, d.All)
	}
	if c := s.CpuStats; c == nil || c.User+c.System+c.Idle == 0 {
		t.Errorf("CPU user+system+idle: got %+v, want > 0", c)
	} else if c.Id != "cpu" {
		t.Errorf("CPU Id: got %q, want %q", c.Id, "cpu")
	}
	if l := s.LoadStats; l == nil || l.ProcessTotal == 0 || l.LastPID == 0 {
		t.Errorf("LoadAvg: got %+v, want ProcessTotal and LastPID > 0", l)
	}
	if s.TaskCount != 0 {
		t.Errorf("TaskCount: got %d, want 0 (filled by the worker)", s.TaskCount)
	}

	// The explicit defaults read the same sources.
	if _, err := (Reader{ProcRoot: "/proc", DiskPath: "/"}).Read(); err != nil {
		t.Errorf("Read with explicit defaults: %v", err)
	}
}

func TestReadFixtureRoot(t *testing.T) {
	s, err := Reader{ProcRoot: "testdata", DiskPath: t.TempDir()}.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got, want := s.MemStats.MemTotal, uint64(16303428); got != want {
		t.Errorf("MemTotal: got %d, want %d", got, want)
	}
	if got, want := s.CpuStats.Idle, uint64(46828483); got != want {
		t.Errorf("CPU Idle: got %d, want %d", got, want)
	}
	if got, want := s.LoadStats.ProcessTotal, uint64(1103); got != want {
		t.Errorf("ProcessTotal: got %d, want %d", got, want)
	}
	if s.DiskStats.All == 0 {
		t.Errorf("Disk All: got 0, want > 0")
	}
}

func TestReadMissingProcRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "no-such-proc")
	s, err := Reader{ProcRoot: root, DiskPath: t.TempDir()}.Read()
	if err == nil {
		t.Fatal("Read: got nil error, want one")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want errors.Is(err, fs.ErrNotExist)", err)
	}
	for _, name := range []string{"read meminfo", "read stat", "read loadavg", filepath.Join(root, "meminfo")} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not mention %q", err, name)
		}
	}
	if s.MemStats != nil || s.CpuStats != nil || s.LoadStats != nil {
		t.Errorf("got proc stats %+v, want nil", s)
	}
	if s.DiskStats == nil {
		t.Error("DiskStats: got nil, want the disk that could be read")
	}
}

func TestReadMissingDiskPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone")
	_, err := Reader{ProcRoot: "testdata", DiskPath: path}.Read()
	if err == nil || !strings.Contains(err.Error(), "statfs "+path) {
		t.Fatalf("got error %v, want one naming statfs %s", err, path)
	}
}

func TestReadMalformedFileNamesPath(t *testing.T) {
	root := t.TempDir()
	for name, content := range map[string]string{
		"meminfo": "MemFree: 1 kB\n",
		"stat":    "cpu 1 2 3 4\n",
		"loadavg": "0 0 0 1/1 1\n",
	} {
		writeFile(t, filepath.Join(root, name), content)
	}
	_, err := Reader{ProcRoot: root, DiskPath: root}.Read()
	if want := "parse " + filepath.Join(root, "meminfo") + ": no MemTotal line"; err == nil || err.Error() != want {
		t.Fatalf("got error %v, want %q", err, want)
	}
}

// JSON keys of goprocinfo's linux types (github.com/c9s/goprocinfo, files
// linux/meminfo.go, linux/disk.go, linux/stat.go, linux/loadavg.go).
var wantJSONKeys = map[string][]string{
	"MemStats": {
		"mem_total", "mem_free", "mem_available", "buffers", "cached",
		"swap_cached", "active", "inactive", "active_anon", "inactive_anon",
		"active_file", "inactive_file", "unevictable", "mlocked", "swap_total",
		"swap_free", "dirty", "write_back", "anon_pages", "mapped", "shmem",
		"slab", "s_reclaimable", "s_unclaim", "kernel_stack", "page_tables",
		"nfs_unstable", "bounce", "writeback_tmp", "commit_limit",
		"committed_as", "vmalloc_total", "vmalloc_used", "vmalloc_chunk",
		"hardware_corrupted", "anon_huge_pages", "huge_pages_total",
		"huge_pages_free", "huge_pages_rsvd", "huge_pages_surp",
		"hugepagesize", "direct_map_4k", "direct_map_2M", "direct_map_1G",
	},
	"DiskStats": {"all", "used", "free", "freeInodes"},
	"CpuStats": {
		"id", "user", "nice", "system", "idle", "iowait", "irq", "softirq",
		"steal", "guest", "guest_nice",
	},
	"LoadStats": {
		"last1min", "last5min", "last15min", "process_running",
		"process_total", "last_pid",
	},
}

func TestStatsJSONKeys(t *testing.T) {
	s, err := Reader{ProcRoot: "testdata", DiskPath: t.TempDir()}.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	s.TaskCount = 3
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}

	if got, want := sortedKeys(top), []string{"CpuStats", "DiskStats", "LoadStats", "MemStats", "TaskCount"}; !slices.Equal(got, want) {
		t.Fatalf("top-level keys: got %v, want %v", got, want)
	}
	if got, want := top["TaskCount"], 3.0; got != want {
		t.Errorf("TaskCount: got %v, want %v", got, want)
	}
	for name, keys := range wantJSONKeys {
		obj, ok := top[name].(map[string]any)
		if !ok {
			t.Errorf("%s: got %T, want a JSON object", name, top[name])
			continue
		}
		want := slices.Sorted(slices.Values(keys))
		if got := sortedKeys(obj); !slices.Equal(got, want) {
			t.Errorf("%s keys:\n got %v\nwant %v", name, got, want)
		}
	}

	values := []struct {
		obj, key string
		want     any
	}{
		{"MemStats", "mem_total", 16303428.0},
		{"MemStats", "mem_available", 9815116.0},
		{"MemStats", "active_anon", 231844.0},
		{"MemStats", "direct_map_2M", 12886016.0},
		{"CpuStats", "id", "cpu"},
		{"CpuStats", "user", 10132153.0},
		{"CpuStats", "guest_nice", 7.0},
		{"LoadStats", "last1min", 0.64},
		{"LoadStats", "process_running", 3.0},
		{"LoadStats", "last_pid", 5225.0},
	}
	for _, v := range values {
		obj, _ := top[v.obj].(map[string]any)
		if got := obj[v.key]; got != v.want {
			t.Errorf("%s.%s: got %v, want %v", v.obj, v.key, got, v.want)
		}
	}
	disk, _ := top["DiskStats"].(map[string]any)
	if all, _ := disk["all"].(float64); all <= 0 {
		t.Errorf("DiskStats.all: got %v, want > 0", disk["all"])
	}

	// A missing part marshals as null, not as a missing key.
	b, err = json.Marshal(Stats{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"MemStats":null,"DiskStats":null,"CpuStats":null,"LoadStats":null,"TaskCount":0}`; got != want {
		t.Errorf("empty Stats: got %s, want %s", got, want)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
