//go:build !unix

package namelock

import "os"

func tryLock(f *os.File) (bool, error) { return false, ErrUnsupported }

func unlock(f *os.File) error { return nil }
