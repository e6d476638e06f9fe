package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/internal/testenv"
)

// readmeMark marks a README section whose shell blocks TestREADMEQuickStart runs.
const readmeMark = "<!-- readme-test -->"

// readmeBlocks returns the ```sh blocks of the README's marked sections: those after a line
// that is readmeMark, up to the next heading.
func readmeBlocks(t *testing.T, readme string) []string {
	t.Helper()
	var (
		blocks     []string
		marked, in bool
		cur        strings.Builder
		sawMark    int
	)
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case in && line == "```":
			blocks = append(blocks, cur.String())
			cur.Reset()
			in = false
		case in:
			cur.WriteString(line + "\n")
		case strings.TrimSpace(line) == readmeMark:
			marked = true
			sawMark++
		case strings.HasPrefix(line, "#"):
			marked = false
		case marked && line == "```sh":
			in = true
		}
	}
	if sawMark == 0 || len(blocks) == 0 {
		t.Fatalf("README.md: no %s sections with ```sh blocks", readmeMark)
	}
	return blocks
}

// TestREADMEQuickStart runs the README's marked shell blocks, as written, with bash against a
// real worker: cube on PATH freshly built, the worker's address in CUBE_WORKER and in place of
// localhost:5556, the test's echo image in place of cube-echo:latest (which tests never touch),
// and a working directory holding the examples, so that the quick start cannot drift.
func TestREADMEQuickStart(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme))
	d := startDaemon(t)
	addr := strings.TrimPrefix(d.url, "http://")

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "cube"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cube: %v\n%s", err, out)
	}
	image := strings.NewReplacer("cube-echo:latest", testenv.EchoImage, "localhost:5556", addr)
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"task.json", "event.json"} {
		b, err := os.ReadFile(filepath.Join("../../examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "examples", name), []byte(image.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var all strings.Builder
	for i, block := range blocks {
		script := image.Replace(block)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "CUBE_WORKER="+addr, "CUBE_TOKEN=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("README block %d failed: %v\n--- script\n%s--- stdout\n%s--- stderr\n%s", i+1, err, script, stdout.String(), stderr.String())
		}
		t.Logf("README block %d:\n--- stdout\n%s--- stderr\n%s", i+1, stdout.String(), stderr.String())
		all.WriteString(stdout.String())
	}
	// What the README says the blocks print (what can be checked without racing the task's own
	// output: its environment is printed at start, the health check came before it was healthy).
	for _, want := range []string{
		"is Running and healthy, ports ",         // cube run --wait
		"hi from ",                               // curl of the task's published port
		"GREETING=hi\n",                          // cube logs: the environment
		"GET /health 200\n",                      // cube logs: the health check's request
		"21b23589-5d2d-4731-b5c9-a97e9832d021\n", // cube run -f examples/event.json
		"\n3\n",                                  // cube wait job
		"ok",                                     // curl of /health, in the curl section
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("the README's blocks printed\n%s\nwant %q in it", all.String(), want)
		}
	}
}
