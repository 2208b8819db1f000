//go:build !(linux && (amd64 || arm64))

package sqlstore

// walVFSReady returns "": write-combining for the WAL (walbuf.go) is built
// and measured on Linux only, and elsewhere SQLite's default VFS writes the
// WAL as it always does.
func walVFSReady() (string, error) { return "", nil }

// pageCacheInstalled is false: the page cache wrapper (pcache.go) is built
// where the WAL's is.
const pageCacheInstalled = false

// pageBufferInstalled is false: the page buffer (pagebuf.go) is built
// where the page cache wrapper is.
const pageBufferInstalled = false
