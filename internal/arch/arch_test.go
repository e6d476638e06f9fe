// Package arch checks the import arrows between cube's packages: the domain imports no
// technology, and adapters meet only in cmd.
package arch

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/cube-orchestrator/cube"

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", mod+"/"+pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}

func TestImportArrows(t *testing.T) {
	tests := []struct {
		pkg     string
		allowed func(dep string) bool
	}{
		// The domain: the standard library and uuid, no Docker, no chi, no Prometheus.
		{"task", func(d string) bool { return d == mod+"/task" || d == "github.com/google/uuid" }},
		{"worker", func(d string) bool {
			return !strings.HasPrefix(d, "github.com/docker/") && !strings.HasPrefix(d, mod+"/api") &&
				!strings.HasPrefix(d, mod+"/worker/docker") && !strings.HasPrefix(d, "github.com/go-chi/") &&
				!strings.HasPrefix(d, "github.com/prometheus/")
		}},
		{"worker/docker", func(d string) bool {
			return d != mod+"/worker" && !strings.HasPrefix(d, mod+"/api") && !strings.HasPrefix(d, "github.com/go-chi/")
		}},
		// The API mounts the metrics handler it is given: it knows nothing of Prometheus.
		{"api", func(d string) bool {
			return !strings.HasPrefix(d, "github.com/docker/") && !strings.HasPrefix(d, mod+"/worker/docker") &&
				!strings.HasPrefix(d, "github.com/prometheus/") && d != mod+"/internal/metrics"
		}},
		// The metrics read the worker and wrap its runtime; they serve no routes and drive no Engine.
		{"internal/metrics", func(d string) bool {
			return !strings.HasPrefix(d, mod+"/api") && !strings.HasPrefix(d, mod+"/worker/docker") &&
				!strings.HasPrefix(d, "github.com/docker/") && !strings.HasPrefix(d, "github.com/go-chi/")
		}},
		// The error table, which both the API and its client read: the kinds, nothing else.
		{"api/errmap", func(d string) bool {
			return d == mod+"/api/errmap" || d == mod+"/task" || d == "github.com/google/uuid"
		}},
		// The client is imported by other programs (a manager): it carries no server.
		{"api/client", func(d string) bool {
			return d != mod+"/api" && !strings.HasPrefix(d, mod+"/worker") &&
				!strings.HasPrefix(d, "github.com/docker/") && !strings.HasPrefix(d, "github.com/go-chi/")
		}},
	}
	for _, tt := range tests {
		for _, d := range deps(t, tt.pkg) {
			if !tt.allowed(d) {
				t.Errorf("%s imports %s: that arrow points the wrong way", tt.pkg, d)
			}
		}
	}
}
