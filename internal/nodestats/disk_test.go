package nodestats

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadDisk(t *testing.T) {
	dir := t.TempDir()
	d, err := readDisk(dir)
	if err != nil {
		t.Fatalf("readDisk: %v", err)
	}
	if d.All == 0 {
		t.Errorf("All: got 0, want > 0")
	}
	if d.Used+d.Free != d.All {
		t.Errorf("Used %d + Free %d: got %d, want All %d", d.Used, d.Free, d.Used+d.Free, d.All)
	}

	missing := filepath.Join(dir, "missing")
	if _, err := readDisk(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("readDisk(%s): got %v, want fs.ErrNotExist", missing, err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
