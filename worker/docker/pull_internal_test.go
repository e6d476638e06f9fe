package docker

import (
	"strings"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/pkg/jsonmessage"
)

func TestPullProgressAddsUpLayers(t *testing.T) {
	msgs := []jsonmessage.JSONMessage{
		{Status: "Pulling from cube/echo", ID: "v1"},
		{Status: "Already exists", ID: "aaa"},
		{Status: "Pulling fs layer", ID: "bbb"},
		{Status: "Pulling fs layer", ID: "ccc"},
		{Status: "Downloading", ID: "bbb", Progress: &jsonmessage.JSONProgress{Current: 100, Total: 1000}},
		{Status: "Downloading", ID: "ccc", Progress: &jsonmessage.JSONProgress{Current: 50, Total: 500}},
		{Status: "Download complete", ID: "bbb"},
		{Status: "Pull complete", ID: "bbb"},
		{Status: "Digest: sha256:abc"},
		{Status: "Status: Downloaded newer image for x"},
	}
	var p pullProgress
	changed := 0
	for _, m := range msgs {
		if p.update(m) {
			changed++
		}
	}
	if changed != 7 {
		t.Errorf("messages that changed the figures: got %d, want 7 (the layer messages)", changed)
	}
	got := p.snapshot()
	want := task.PullProgress{Layers: 3, LayersDone: 2, Bytes: 1050, BytesTotal: 1500}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestStartErrorNamesTheTakenPort(t *testing.T) {
	err := startError(errString(`Error response from daemon: driver failed programming external connectivity on endpoint x: Bind for 0.0.0.0:8080 failed: port is already allocated`))
	if task.ErrorCode(err) != task.ECONFLICT || !strings.Contains(err.Error(), "host port 8080 is already in use") {
		t.Errorf("got %v, want ECONFLICT naming host port 8080", err)
	}
	err = startError(errString(`Error response from daemon: driver failed programming external connectivity on endpoint x: Error starting userland proxy: listen tcp4 0.0.0.0:9090: bind: address already in use`))
	if !strings.Contains(err.Error(), "host port 9090 is already in use") {
		t.Errorf("got %v, want it to name host port 9090", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
