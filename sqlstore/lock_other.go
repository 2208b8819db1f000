//go:build !unix

package sqlstore

// lockStore does nothing where flock(2) is missing: two stores on one file
// are not detected there (see lock_unix.go).
func lockStore(string) (release func() error, err error) {
	return func() error { return nil }, nil
}
