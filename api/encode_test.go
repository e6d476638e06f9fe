package api

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// GET /tasks encodes its list one task at a time; what it writes must be, byte for byte, what
// encoding the whole list at once writes.
func TestEncodeListMatchesEncode(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	full := task.Task{ID: uuid.New(), Name: "<web> & \u2028", State: task.Running, Image: "cube-echo:latest",
		ExposedPorts: task.PortSet{"7777/tcp": {}}, Env: []string{"A=1"}, StartTime: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		Events: []task.Record{{Time: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), Type: task.RecordReceived}}}
	for name, list := range map[string][]task.Task{
		"empty": {}, "one": {full}, "three": {full, {ID: uuid.New()}, full},
	} {
		want := httptest.NewRecorder()
		s.encode(want, httptest.NewRequest("GET", "/tasks", nil), 200, list)
		got := httptest.NewRecorder()
		s.encodeSeq(got, httptest.NewRequest("GET", "/tasks", nil), 200, func(yield func(any) error) error {
			for i := range list {
				if err := yield(&list[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) || got.Code != want.Code ||
			got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("%s: encodeSeq wrote %d %q %q, want encode's %d %q %q", name, got.Code, got.Header().Get("Content-Type"), got.Body,
				want.Code, want.Header().Get("Content-Type"), want.Body)
		}
	}
}
