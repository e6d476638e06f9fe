package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"strings"
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

// GET /tasks/{id} and POST /tasks write their task with encodeTask: byte for byte what encode
// writes, and for a task encoding/json cannot write (a year past 9999), the status alone, as
// encode.
func TestEncodeTaskMatchesEncode(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	at := time.Date(2024, 5, 1, 12, 0, 0, 5, time.FixedZone("", 3600))
	for name, tk := range map[string]task.Task{
		"zero": {},
		"full": {ID: uuid.New(), Name: "<web> & \u2028\xff", State: task.Running, Image: "cube-echo:latest", Cpu: 1e-7,
			ExposedPorts: task.PortSet{"7777/tcp": {}, "80/tcp": {}}, Env: []string{}, StartTime: at,
			HostPorts: task.PortMap{"7777/tcp": {{HostIP: "::", HostPort: "49153"}}}, Health: &task.HealthSpec{},
			Events: []task.Record{{Time: at, Type: task.RecordReceived, Message: "\x00"}}},
		"unencodable": {StartTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		want := httptest.NewRecorder()
		s.encode(want, httptest.NewRequest("GET", "/tasks/x", nil), 201, tk)
		got := httptest.NewRecorder()
		s.encodeTask(got, httptest.NewRequest("GET", "/tasks/x", nil), 201, &tk)
		if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) || got.Code != want.Code ||
			got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("%s: encodeTask wrote %d %q %q, want encode's %d %q %q", name, got.Code, got.Header().Get("Content-Type"), got.Body,
				want.Code, want.Header().Get("Content-Type"), want.Body)
		}
	}
}

// A task that cannot be encoded ends GET /tasks's answer where it is, as it did before
// AppendJSON: nothing of it or after it is written.
func TestEncodeListStopsAtUnencodable(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	// 64 tasks of ~1 KB, more than the list's 32 KiB buffer, then one that cannot be encoded.
	var list []task.Task
	for i := range 64 {
		list = append(list, task.Task{Name: fmt.Sprintf("ok-%d-%s", i, strings.Repeat("x", 1000))})
	}
	list = append(list, task.Task{Cpu: math.NaN()}, task.Task{Name: "never"})
	rec := httptest.NewRecorder()
	s.encodeSeq(rec, httptest.NewRequest("GET", "/tasks", nil), 200, func(yield func(any) error) error {
		for i := range list {
			if err := yield(&list[i]); err != nil {
				return err
			}
		}
		return nil
	})
	ok, err := json.Marshal(list[:64])
	if err != nil {
		t.Fatal(err)
	}
	// What had been flushed goes out, no more: a part of the tasks before the bad one, cut
	// where the buffer was last written out, and nothing of it or after it.
	body := rec.Body.String()
	if len(body) < 32<<10 || !strings.HasPrefix(string(ok), body) || strings.Contains(body, "never") {
		t.Fatalf("encodeSeq: got %d bytes (%.40q…), want at least the 32 KiB flushed before the bad task, a prefix of the good ones", len(body), body)
	}
}
