// Package nodestats reports the resource usage of the Linux node a cube
// worker runs on: memory (/proc/meminfo), disk space of one filesystem
// (statfs), aggregate CPU time (/proc/stat) and load averages
// (/proc/loadavg).
//
// The worker serves these numbers as the answer of GET /stats. The types
// MemInfo, Disk, CPUStat and LoadAvg mirror, field for field and JSON tag for
// JSON tag, the types of the same names in github.com/c9s/goprocinfo/linux,
// so a manager written against goprocinfo (like the "Cube" manager of the
// book "Build an Orchestrator in Go") can decode the answer into its own
// types. The package uses only the standard library; the parsers are
// re-implemented here rather than importing goprocinfo.
package nodestats

import (
	"errors"
	"path/filepath"
)

// Default locations used by a zero Reader.
const (
	// DefaultProcRoot is the mount point of the proc filesystem.
	DefaultProcRoot = "/proc"
	// DefaultDiskPath is the path whose filesystem is measured.
	DefaultDiskPath = "/"
)

// Stats is the answer of GET /stats. TaskCount is filled by the worker
// (tasks in Running state).
//
// The fields have no json tags on purpose: the JSON keys are the Go names
// MemStats, DiskStats, CpuStats, LoadStats and TaskCount, which is what the
// book's manager decodes.
type Stats struct {
	MemStats  *MemInfo
	DiskStats *Disk
	CpuStats  *CPUStat
	LoadStats *LoadAvg
	TaskCount int
}

// Reader reads node stats from a proc filesystem root (normally "/proc") and
// the filesystem at DiskPath (normally "/"). An empty ProcRoot or DiskPath
// means DefaultProcRoot or DefaultDiskPath, so the zero Reader reads the
// real node.
type Reader struct {
	ProcRoot string
	DiskPath string
}

// Read reads meminfo, stat and loadavg under r.ProcRoot and the filesystem
// usage of r.DiskPath. TaskCount is left at zero for the caller to fill.
//
// Every source is attempted. If some fail, Read returns the Stats with the
// parts that succeeded (the others nil) together with the failures joined by
// errors.Join, so errors.Is works on each of them.
func (r Reader) Read() (Stats, error) {
	procRoot := r.ProcRoot
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	diskPath := r.DiskPath
	if diskPath == "" {
		diskPath = DefaultDiskPath
	}

	var (
		s    Stats
		errs []error
		err  error
	)
	if s.MemStats, err = readMemInfo(filepath.Join(procRoot, "meminfo")); err != nil {
		errs = append(errs, err)
	}
	if s.DiskStats, err = readDisk(diskPath); err != nil {
		errs = append(errs, err)
	}
	if s.CpuStats, err = readCPUStat(filepath.Join(procRoot, "stat")); err != nil {
		errs = append(errs, err)
	}
	if s.LoadStats, err = readLoadAvg(filepath.Join(procRoot, "loadavg")); err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}
