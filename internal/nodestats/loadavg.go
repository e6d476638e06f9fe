package nodestats

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LoadAvg is the content of /proc/loadavg: the load averages over the last
// 1, 5 and 15 minutes, the number of runnable and of existing scheduling
// entities (processes and threads), and the PID most recently assigned.
//
// Fields and JSON tags are those of goprocinfo's linux.LoadAvg.
type LoadAvg struct {
	Last1Min       float64 `json:"last1min"`
	Last5Min       float64 `json:"last5min"`
	Last15Min      float64 `json:"last15min"`
	ProcessRunning uint64  `json:"process_running"`
	ProcessTotal   uint64  `json:"process_total"`
	LastPID        uint64  `json:"last_pid"`
}

// readLoadAvg reads and parses the loadavg file at path.
func readLoadAvg(path string) (*LoadAvg, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read loadavg: %w", err)
	}
	l, err := parseLoadAvg(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return l, nil
}

// parseLoadAvg parses /proc/loadavg content, "0.64 0.24 0.09 3/103 5225".
func parseLoadAvg(data []byte) (*LoadAvg, error) {
	f := strings.Fields(string(data))
	if len(f) < 5 {
		return nil, fmt.Errorf("%d fields, want 5", len(f))
	}
	running, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return nil, fmt.Errorf("field 4 %q is not running/total", f[3])
	}
	var (
		l   LoadAvg
		err error
	)
	for _, p := range []struct {
		s   string
		dst *float64
	}{{f[0], &l.Last1Min}, {f[1], &l.Last5Min}, {f[2], &l.Last15Min}} {
		if *p.dst, err = strconv.ParseFloat(p.s, 64); err != nil {
			return nil, err
		}
	}
	for _, p := range []struct {
		s   string
		dst *uint64
	}{{running, &l.ProcessRunning}, {total, &l.ProcessTotal}, {f[4], &l.LastPID}} {
		if *p.dst, err = strconv.ParseUint(p.s, 10, 64); err != nil {
			return nil, err
		}
	}
	return &l, nil
}
