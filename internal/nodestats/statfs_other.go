//go:build !unix

package nodestats

import "errors"

// statfs is not available on this platform.
func statfs(string) (*Disk, error) {
	return nil, errors.ErrUnsupported
}
