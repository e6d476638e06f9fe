package nodestats

import (
	"os"
	"strings"
	"testing"
)

func TestParseCPUStatFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/stat")
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCPUStat(data)
	if err != nil {
		t.Fatalf("parseCPUStat: %v", err)
	}
	want := CPUStat{
		Id: "cpu", User: 10132153, Nice: 290696, System: 3084719, Idle: 46828483,
		IOWait: 16683, IRQ: 0, SoftIRQ: 25195, Steal: 175, Guest: 12, GuestNice: 7,
	}
	if *c != want {
		t.Errorf("got %+v, want %+v", *c, want)
	}
}

func TestParseCPUStatInputs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    CPUStat
		wantErr string
	}{
		{
			name: "old kernel, 7 columns",
			in:   "cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\n",
			want: CPUStat{Id: "cpu", User: 1, Nice: 2, System: 3, Idle: 4, IOWait: 5, IRQ: 6, SoftIRQ: 7},
		},
		{
			name: "extra future columns ignored, cpu line not first",
			in:   "ctxt 9\ncpu 1 2 3 4 5 6 7 8 9 10 11 12\n",
			want: CPUStat{Id: "cpu", User: 1, Nice: 2, System: 3, Idle: 4, IOWait: 5, IRQ: 6, SoftIRQ: 7, Steal: 8, Guest: 9, GuestNice: 10},
		},
		{name: "only per-cpu lines", in: "cpu0 1 2 3 4\ncpu1 1 2 3 4\n", wantErr: `no "cpu" line`},
		{name: "empty", in: "", wantErr: `no "cpu" line`},
		{name: "too few columns", in: "cpu 1 2 3\n", wantErr: "3 columns"},
		{name: "bad number", in: "cpu 1 2 x 4\n", wantErr: "cpu column 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseCPUStat([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCPUStat: %v", err)
			}
			if *c != tt.want {
				t.Errorf("got %+v, want %+v", *c, tt.want)
			}
		})
	}
}
