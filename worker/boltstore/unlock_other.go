//go:build !unix

package boltstore

import "os"

// unlock does nothing where bbolt does not lock with flock: closing f is enough there.
func unlock(*os.File) {}
