//go:build !unix

package sqlstore

import "os"

// lockStore does nothing where flock(2) is missing: two stores on one file
// are not detected there (see lock_unix.go).
func lockStore(*os.File) error { return nil }
