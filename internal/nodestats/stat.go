package nodestats

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUStat is the aggregate "cpu" line of /proc/stat: the time all CPUs
// spent in each mode since boot, in clock ticks (USER_HZ, normally 1/100 s).
// Id is the line's label, "cpu".
//
// Fields and JSON tags are those of goprocinfo's linux.CPUStat. Columns the
// running kernel does not report stay zero.
type CPUStat struct {
	Id        string `json:"id"`
	User      uint64 `json:"user"`
	Nice      uint64 `json:"nice"`
	System    uint64 `json:"system"`
	Idle      uint64 `json:"idle"`
	IOWait    uint64 `json:"iowait"`
	IRQ       uint64 `json:"irq"`
	SoftIRQ   uint64 `json:"softirq"`
	Steal     uint64 `json:"steal"`
	Guest     uint64 `json:"guest"`
	GuestNice uint64 `json:"guest_nice"`
}

// readCPUStat reads the stat file at path and parses its "cpu" line.
func readCPUStat(path string) (*CPUStat, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read stat: %w", err)
	}
	c, err := parseCPUStat(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return c, nil
}

// parseCPUStat parses the aggregate "cpu" line of /proc/stat content. The
// line needs at least the user, nice, system and idle columns; columns after
// guest_nice are ignored.
func parseCPUStat(data []byte) (*CPUStat, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20) // the "intr" line is long on machines with many IRQs
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		c := CPUStat{Id: f[0]}
		cols := []*uint64{
			&c.User, &c.Nice, &c.System, &c.Idle, &c.IOWait,
			&c.IRQ, &c.SoftIRQ, &c.Steal, &c.Guest, &c.GuestNice,
		}
		vals := f[1:]
		if len(vals) < 4 {
			return nil, fmt.Errorf("cpu line has %d columns, want at least 4", len(vals))
		}
		for i, dst := range cols {
			if i >= len(vals) {
				break
			}
			v, err := strconv.ParseUint(vals[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cpu column %d: %w", i+1, err)
			}
			*dst = v
		}
		return &c, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New(`no "cpu" line`)
}
