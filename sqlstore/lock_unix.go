//go:build unix

package sqlstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// lockStore takes the store's lock: an exclusive flock(2) of the database
// file, through a descriptor of its own (following symbolic links, as
// SQLite does), held until release. It fails with ErrInUse while another
// store, in this process or another, holds it. It creates the file if
// there is none, as SQLite would.
//
// flock(2) locks are apart from the fcntl(2) locks SQLite takes on the same
// file, so readers outside the store (the sqlite3 shell, a backup) are not
// kept out. Closing a descriptor of a file drops the process's fcntl locks
// on it: release closes this one only after the store's connections are
// closed, when SQLite holds none.
func lockStore(path string) (release func() error, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) //nolint:gosec // G304: the operator's database path, which SQLite opens next
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// A file this process may only read still takes the lock; the
		// store then fails on its first write, as SQLite decides.
		f, err = os.Open(path) //nolint:gosec // G304: as above
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: opening %s: %w", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, path)
		}
		return nil, fmt.Errorf("sqlstore: locking %s: %w", path, err)
	}
	return f.Close, nil // closing the descriptor drops the lock
}
