package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestDefaultDataDir(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tt := range []struct {
		getenv  func(string) string
		euid    int
		name    string
		want    string
		wantErr string
	}{
		{env("HOME", "/root", "XDG_STATE_HOME", "/x"), 0, "node1", "/var/lib/cube/node1", ""},
		{env("HOME", "/home/u", "XDG_STATE_HOME", "/home/u/state"), 1000, "node1", "/home/u/state/cube/node1", ""},
		{env("HOME", "/home/u", "XDG_STATE_HOME", "relative"), 1000, "node1", "/home/u/.local/state/cube/node1", ""},
		{env("HOME", "/home/u"), 1000, "web.example.com", "/home/u/.local/state/cube/web.example.com", ""},
		{env(), 1000, "node1", "", "HOME is not set"},
		{env("HOME", "/home/u"), 1000, "a/b", "", "cannot name its state directory"},
		{env("HOME", "/home/u"), 0, "..", "", "cannot name its state directory"},
	} {
		got, err := defaultDataDir(tt.getenv, tt.euid, tt.name)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("defaultDataDir(euid %d, %q): got %q, %v; want an error containing %q", tt.euid, tt.name, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("defaultDataDir(euid %d, %q): got %q, %v; want %q", tt.euid, tt.name, got, err, tt.want)
		}
	}
}

// --in-memory and --data-dir exclude each other; --in-memory beats CUBE_DATA_DIR.
func TestInMemoryFlag(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"worker", "--port", "0", "--name", "x", "--in-memory", "--data-dir", t.TempDir()},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--in-memory and --data-dir exclude each other") {
		t.Errorf("--in-memory with --data-dir: got %v, want them refused together", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start, log, and stop at once
	var logs strings.Builder
	dir := t.TempDir()
	err = run(ctx, []string{"worker", "--port", "0", "--name", "x", "--in-memory", "--lock-dir", lockDir(t)},
		func(k string) string { return map[string]string{"CUBE_DATA_DIR": dir}[k] }, io.Discard, &logs)
	if err != nil {
		t.Fatalf("--in-memory with CUBE_DATA_DIR set: %v", err)
	}
	if !strings.Contains(logs.String(), "state is kept in memory (--in-memory)") {
		t.Errorf("log: got %q, want the in-memory warning", logs.String())
	}
}
