// Package tmpfs mounts size-limited tmpfs file systems for fault tests: a
// database on one can be filled until writes fail, then grown again while
// its files stay open.
package tmpfs

import (
	"errors"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size (a mount option such as "2m") on a new
// temporary folder and returns the folder. tb is skipped when this process
// may not mount (it is not root, or has no CAP_SYS_ADMIN). The file system
// is unmounted when the test ends, after anything started later is gone:
// cleanups run last registered first.
func Mount(tb testing.TB, size string) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			tb.Skipf("mounting a tmpfs is not permitted here (%v): this fault test needs root or CAP_SYS_ADMIN", err)
		}
		tb.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			tb.Errorf("unmounting %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// Resize changes the size of the tmpfs mounted on dir, while the files on it
// stay open.
func Resize(tb testing.TB, dir, size string) {
	tb.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size); err != nil {
		tb.Fatalf("resizing the tmpfs on %s to %s: %v", dir, size, err)
	}
}
