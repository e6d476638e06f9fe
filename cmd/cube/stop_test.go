package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/api"
	"github.com/cube-orchestrator/cube/internal/faultproxy"
	"github.com/cube-orchestrator/cube/internal/testenv"
	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/docker"
	"github.com/google/uuid"
)

// A DELETE of a task that has ended removes its container (kept until then for its logs) and
// leaves its state, exit code and error as they were.
func TestDeleteEndedTaskKeepsItsState(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	done := echoTask("--exit", "0")
	failed := echoTask("--exit", "3")
	for _, tt := range []struct {
		tk    task.Task
		state task.State
		exit  int
	}{{done, task.Completed, 0}, {failed, task.Failed, 3}} {
		d.submit(t, tt.tk)
		ended := d.waitState(t, tt.tk.ID, tt.state, time.Minute)
		if ended.ContainerID == "" {
			t.Fatalf("%v task: its container was not kept", tt.state)
		}
		if code := d.do(t, http.MethodDelete, "/tasks/"+tt.tk.ID.String(), nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE: got %d, want 204", code)
		}
		got := d.waitTask(t, tt.tk.ID, 30*time.Second, "its container removed", func(t task.Task) bool { return t.ContainerID == "" })
		if got.State != tt.state || got.ExitCode != tt.exit || got.Error != ended.Error || !got.FinishTime.Equal(ended.FinishTime) {
			t.Errorf("after DELETE: got %v exit %d Error %q FinishTime %v, want it as it ended: %v exit %d Error %q FinishTime %v",
				got.State, got.ExitCode, got.Error, got.FinishTime, tt.state, tt.exit, ended.Error, ended.FinishTime)
		}
		if len(records(got, task.RecordStopped)) != 0 {
			t.Errorf("records %v: want no Stopped record for a task that had ended", recordTypes(got))
		}
		deadline := time.Now().Add(30 * time.Second)
		for !containerGone(t, ended.ContainerID) {
			if time.Now().After(deadline) {
				t.Fatalf("container %s still exists after the DELETE", ended.ContainerID[:12])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// postRaw posts body as it is and decodes the error answer, if any.
func (d *daemon) postRaw(t *testing.T, body string) (int, api.ErrorResponse) {
	t.Helper()
	resp, err := client.Post(d.url+"/tasks", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.ErrorResponse
	if resp.StatusCode >= 400 {
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(&e); err != nil {
			t.Fatalf("POST: %d answer %q is not a JSON error: %v", resp.StatusCode, b, err)
		}
		if e.HTTPStatusCode != resp.StatusCode {
			t.Errorf("error body says %d, status %d", e.HTTPStatusCode, resp.StatusCode)
		}
	}
	return resp.StatusCode, e
}

// The overflow of the report, against the real daemon and its machine's capacity: with 1 GiB
// claimed, a task asking for the largest int64 of memory is refused outright, and so is one
// asking for more than the machine has; neither leaves anything behind, and what fits still
// fits.
func TestAdmissionCannotOverflow(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	first := echoTask("--listen", ":7777")
	first.Memory = 1 << 30
	d.running(t, first, time.Minute)

	event := func(fields string) string {
		return fmt.Sprintf(`{"ID":%q,"State":2,"Timestamp":"","Task":{"ID":%q,"State":1,"Image":%q%s}}`,
			uuid.NewString(), uuid.NewString(), testenv.EchoImage, fields)
	}
	tests := []struct {
		name   string
		fields string
		code   int
		want   []string
	}{
		{"largest int64 of memory", `,"Memory":9223372036854775807`, http.StatusConflict,
			[]string{"Task.Memory", "is more than this worker has for tasks at all", "it can never run here"}},
		{"more memory than the machine", fmt.Sprintf(`,"Memory":%d`, memTotal(t)+1<<30), http.StatusConflict,
			[]string{"Task.Memory", "for tasks at all"}},
		{"memory past int64", `,"Memory":9223372036854775808`, http.StatusBadRequest, []string{"Task.Memory"}},
		{"huge cpu", `,"Cpu":1e308`, http.StatusBadRequest, []string{"Task.Cpu", "at most 1e+09 cores"}},
		{"more cores than the machine", `,"Cpu":100000`, http.StatusConflict, []string{"Task.Cpu", "for tasks at all"}},
	}
	for _, tt := range tests {
		for range 2 { // the second time, after the first refusal: nothing it did changed the sums
			code, e := d.postRaw(t, event(tt.fields))
			if code != tt.code {
				t.Errorf("%s: got %d %q, want %d", tt.name, code, e.Message, tt.code)
				continue
			}
			for _, w := range tt.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("%s: got %q, want it to contain %q", tt.name, e.Message, w)
				}
			}
		}
	}
	// "Not enough free now" says so, distinctly.
	rest := memTotal(t) - 1<<30 + 1
	code, e := d.postRaw(t, event(fmt.Sprintf(`,"Memory":%d`, rest)))
	if code != http.StatusConflict || !strings.Contains(e.Message, "does not fit now") || strings.Contains(e.Message, "at all") {
		t.Errorf("memory over what is free: got %d %q, want 409 saying it does not fit now", code, e.Message)
	}
	if n := len(d.tasks(t)); n != 1 {
		t.Errorf("tasks: got %d, want 1 (refused ones leave nothing behind)", n)
	}
	if n := len(testenv.Containers(t, docker.LabelWorker+"="+d.name)); n != 1 {
		t.Errorf("containers: got %d, want 1", n)
	}
	// What fits still fits.
	small := echoTask("--listen", ":7777")
	small.Memory = 64 << 20
	d.running(t, small, time.Minute)
}

// A task accepted while Docker is down waits Scheduled; a DELETE then ends it Completed once
// Docker answers, and it never gets a container.
func TestDeleteScheduledTaskNeverStartsIt(t *testing.T) {
	t.Parallel()
	testenv.BuildEchoImage(t)
	name := "cube-stop-sched-" + uuid.NewString()[:8]
	proxy := faultproxy.Start(t, faultproxy.Options{})
	p := startProc(t, name, proxy.DockerHost())
	p.waitReady(t, 30*time.Second)
	if err := proxy.Set(faultproxy.Down); err != nil {
		t.Fatal(err)
	}
	tk := echoTask("--print", "ran", "--exit", "0")
	if got := p.submit(t, tk); got.State != task.Scheduled {
		t.Fatalf("POST: got %v, want Scheduled", got.State)
	}
	p.waitTask(t, tk.ID, 30*time.Second, "its start waiting for Docker", func(t task.Task) bool {
		return t.State == task.Scheduled && strings.Contains(t.Error, "waiting for the container runtime")
	})
	if code := p.do(t, http.MethodDelete, "/tasks/"+tk.ID.String(), nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: got %d, want 204", code)
	}
	if err := proxy.Set(faultproxy.Pass); err != nil {
		t.Fatal(err)
	}
	got := p.waitState(t, tk.ID, task.Completed, time.Minute)
	if rs := records(got, task.RecordStopped); len(rs) != 1 || rs[0].Message != "stopped by request before it started" {
		t.Errorf("Stopped records: got %+v in %v", rs, recordTypes(got))
	}
	if n := len(records(got, task.RecordCreated)) + len(records(got, task.RecordStarted)); n != 0 || got.ContainerID != "" {
		t.Errorf("records %v, container %q: want neither created nor started", recordTypes(got), got.ContainerID)
	}
	if cs := containersOf(t, name); len(cs) != 0 {
		t.Errorf("containers: got %d, want none", len(cs))
	}
}
