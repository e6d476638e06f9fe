package nodestats

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseMemInfoFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMemInfo(data)
	if err != nil {
		t.Fatalf("parseMemInfo: %v", err)
	}
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"MemTotal", m.MemTotal, 16303428},
		{"MemFree", m.MemFree, 1184564},
		{"MemAvailable", m.MemAvailable, 9815116},
		{"Buffers", m.Buffers, 523884},
		{"Cached", m.Cached, 7826344},
		{"SwapCached", m.SwapCached, 5632},
		{"Active(anon)", m.ActiveAnon, 231844},
		{"Inactive(anon)", m.InactiveAnon, 5456472},
		{"Active(file)", m.ActiveFile, 4286776},
		{"Inactive(file)", m.InactiveFile, 3819996},
		{"Mlocked", m.Mlocked, 48},
		{"SwapTotal", m.SwapTotal, 2097148},
		{"SwapFree", m.SwapFree, 2041340},
		{"Writeback", m.Writeback, 0},
		{"SReclaimable", m.SReclaimable, 606604},
		{"SUnreclaim", m.SUnreclaim, 292680},
		{"Committed_AS", m.Committed_AS, 15812376},
		{"VmallocTotal", m.VmallocTotal, 34359738367},
		{"HugePages_Total", m.HugePages_Total, 4},
		{"HugePages_Free", m.HugePages_Free, 3},
		{"HugePages_Rsvd", m.HugePages_Rsvd, 1},
		{"Hugepagesize", m.Hugepagesize, 2048},
		{"DirectMap4k", m.DirectMap4k, 592724},
		{"DirectMap2M", m.DirectMap2M, 12886016},
		{"DirectMap1G", m.DirectMap1G, 4194304},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("%s: got %d, want %d", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestParseMemInfoInputs(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantErr   string // substring; "" means success
		wantTotal uint64
		wantAvail uint64
	}{
		{
			name:      "optional keys missing",
			in:        "MemTotal: 1000 kB\nMemFree: 400 kB\n",
			wantTotal: 1000,
		},
		{
			name:      "old kernel without MemAvailable, unknown keys skipped",
			in:        "MemTotal: 2048 kB\nFoo(bar): x y z\nno colon here\n\nMemAvailable:  7 kB\n",
			wantTotal: 2048,
			wantAvail: 7,
		},
		{name: "MemTotal missing", in: "MemFree: 400 kB\n", wantErr: "no MemTotal"},
		{name: "empty", in: "", wantErr: "no MemTotal"},
		{name: "bad number", in: "MemTotal: 12x kB\n", wantErr: "line 1: MemTotal"},
		{name: "no value", in: "MemTotal: 1 kB\nMemFree:\n", wantErr: "line 2: MemFree has no value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMemInfo([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMemInfo: %v", err)
			}
			if m.MemTotal != tt.wantTotal {
				t.Errorf("MemTotal: got %d, want %d", m.MemTotal, tt.wantTotal)
			}
			if m.MemAvailable != tt.wantAvail {
				t.Errorf("MemAvailable: got %d, want %d", m.MemAvailable, tt.wantAvail)
			}
		})
	}
}

// TestMemInfoKeyMapping checks that every MemInfo field is filled from the
// /proc/meminfo key goprocinfo uses for it: the field tag if present, else the
// Go field name.
func TestMemInfoKeyMapping(t *testing.T) {
	typ := reflect.TypeFor[MemInfo]()
	var b strings.Builder
	for i := range typ.NumField() {
		f := typ.Field(i)
		key := f.Tag.Get("field")
		if key == "" {
			key = f.Name
		}
		fmt.Fprintf(&b, "%s: %d kB\n", key, i+1)
	}
	m, err := parseMemInfo([]byte(b.String()))
	if err != nil {
		t.Fatalf("parseMemInfo: %v", err)
	}
	v := reflect.ValueOf(*m)
	for i := range typ.NumField() {
		if got, want := v.Field(i).Uint(), uint64(i+1); got != want {
			t.Errorf("%s: got %d, want %d", typ.Field(i).Name, got, want)
		}
	}
	if got, want := len(m.byKey()), typ.NumField(); got != want {
		t.Errorf("byKey has %d keys, want %d (one per field)", got, want)
	}
}
