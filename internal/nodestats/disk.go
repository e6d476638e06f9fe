package nodestats

import "fmt"

// Disk is the space of the filesystem that holds a path, in bytes, computed
// from statfs(2) the way goprocinfo's linux.ReadDisk does: All is
// blocks*bsize, Free is free blocks*bsize (including blocks reserved for
// root), Used is All-Free, and FreeInodes is the number of free inodes.
//
// Fields and JSON tags are those of goprocinfo's linux.Disk.
type Disk struct {
	All        uint64 `json:"all"`
	Used       uint64 `json:"used"`
	Free       uint64 `json:"free"`
	FreeInodes uint64 `json:"freeInodes"`
}

// readDisk reports the usage of the filesystem holding path.
func readDisk(path string) (*Disk, error) {
	d, err := statfs(path)
	if err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	return d, nil
}
