package nodestats

import (
	"os"
	"strings"
	"testing"
)

func TestParseLoadAvgFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseLoadAvg(data)
	if err != nil {
		t.Fatalf("parseLoadAvg: %v", err)
	}
	want := LoadAvg{Last1Min: 0.64, Last5Min: 0.24, Last15Min: 0.09, ProcessRunning: 3, ProcessTotal: 1103, LastPID: 5225}
	if *l != want {
		t.Errorf("got %+v, want %+v", *l, want)
	}
}

func TestParseLoadAvgInputs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    LoadAvg
		wantErr string
	}{
		{
			name: "busy machine, no trailing newline",
			in:   "12.50 8.03 4.00 17/2048 4194303",
			want: LoadAvg{Last1Min: 12.5, Last5Min: 8.03, Last15Min: 4, ProcessRunning: 17, ProcessTotal: 2048, LastPID: 4194303},
		},
		{name: "empty", in: "", wantErr: "0 fields"},
		{name: "too few fields", in: "0.1 0.2 0.3 1/2\n", wantErr: "4 fields"},
		{name: "no slash", in: "0.1 0.2 0.3 12 5\n", wantErr: "not running/total"},
		{name: "bad load", in: "0.1 abc 0.3 1/2 5\n", wantErr: "invalid syntax"},
		{name: "bad pid", in: "0.1 0.2 0.3 1/2 -5\n", wantErr: "invalid syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := parseLoadAvg([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseLoadAvg: %v", err)
			}
			if *l != tt.want {
				t.Errorf("got %+v, want %+v", *l, tt.want)
			}
		})
	}
}
