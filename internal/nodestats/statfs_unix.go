//go:build unix

package nodestats

import "syscall"

// statfs fills a Disk from statfs(2) on path.
func statfs(path string) (*Disk, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return nil, err
	}
	bsize := uint64(fs.Bsize)
	d := Disk{
		All:        uint64(fs.Blocks) * bsize,
		Free:       uint64(fs.Bfree) * bsize,
		FreeInodes: uint64(fs.Ffree),
	}
	d.Used = d.All - d.Free
	return &d, nil
}
