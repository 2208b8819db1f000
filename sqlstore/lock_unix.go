//go:build unix

package sqlstore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockStore takes the store's lock on f, the database file opened by
// openDBFile: an exclusive flock(2), held until f is closed. It fails with
// ErrInUse while another store, in this process or another, holds it.
//
// flock(2) locks are apart from the fcntl(2) locks SQLite takes on the same
// file, so readers outside the store (the sqlite3 shell, a backup) are not
// kept out. Closing a descriptor of a file drops the process's fcntl locks
// on it: Close closes f only after the store's connections are closed, when
// SQLite holds none.
func lockStore(f *os.File) error {
	var err error
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("%w: %s", ErrInUse, f.Name())
	}
	if err != nil {
		return fmt.Errorf("sqlstore: locking %s: %w", f.Name(), err)
	}
	return nil
}
