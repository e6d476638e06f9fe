package errmap

import (
	"net/http"
	"testing"

	"github.com/cube-orchestrator/cube/task"
)

// Each kind has its status, and that status reads back as the kind.
func TestEveryKindRoundTrips(t *testing.T) {
	tests := []struct {
		code   task.Code
		status int
	}{
		{task.EINVALID, 400},
		{task.ENOTFOUND, 404},
		{task.ECONFLICT, 409},
		{task.EFORBIDDEN, 403},
		{task.EUNAVAILABLE, 503},
		{task.EINTERNAL, 500},
	}
	for _, tt := range tests {
		if got := Status(tt.code); got != tt.status {
			t.Errorf("Status(%s): got %d, want %d", tt.code, got, tt.status)
		}
		if got := Code(tt.status); got != tt.code {
			t.Errorf("Code(%d): got %s, want %s", tt.status, got, tt.code)
		}
	}
	if len(tests) != len(kinds) {
		t.Errorf("the table has %d kinds, the test %d: test the new one", len(kinds), len(tests))
	}
}

// A kind the table does not know is a 500, never a status of 0.
func TestUnknownKindIsInternal(t *testing.T) {
	if got := Status("made-up"); got != http.StatusInternalServerError {
		t.Errorf("Status(made-up): got %d, want 500", got)
	}
}

// The statuses no kind maps to read as the nearest kind.
func TestOtherStatusesReadAsTheNearestKind(t *testing.T) {
	tests := []struct {
		status int
		want   task.Code
	}{
		{401, task.EFORBIDDEN},
		{405, task.EINVALID},
		{408, task.EUNAVAILABLE},
		{413, task.EINVALID},
		{422, task.EINVALID},
		{429, task.EUNAVAILABLE},
		{499, task.EINVALID},
		{501, task.EINTERNAL},
		{502, task.EUNAVAILABLE},
		{504, task.EUNAVAILABLE},
		{599, task.EINTERNAL},
		{200, task.EINTERNAL},
		{302, task.EINTERNAL},
	}
	for _, tt := range tests {
		if got := Code(tt.status); got != tt.want {
			t.Errorf("Code(%d): got %s, want %s", tt.status, got, tt.want)
		}
	}
}
