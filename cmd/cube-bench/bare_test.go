package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// The scale phase's second baseline must write what the first writes, byte for byte.
func TestBareHandlersAgree(t *testing.T) {
	at := time.Date(2026, 12, 1, 15, 31, 7, 123456789, time.FixedZone("", 3600))
	for name, list := range map[string][]task.Task{
		"nil":   nil,
		"empty": {},
		"some": {{ID: uuid.New(), Name: "<web> & \u2028\xff", State: task.Running, Image: "cube-echo:latest", Cpu: 1e-7,
			ExposedPorts: task.PortSet{"7777/tcp": {}}, StartTime: at, Events: []task.Record{{Time: at, Type: task.RecordStarted}}},
			{State: task.Failed, Error: "pull refused", Env: []string{}}},
	} {
		get := func(h http.Handler) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tasks", nil))
			return rec
		}
		want, got := get(bareHandler(list)), get(bareAppendHandler(list))
		if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) ||
			got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("%s: bareAppendHandler wrote %d %q, want bareHandler's %d %q", name, got.Code, got.Body, want.Code, want.Body)
		}
	}
}
