//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Page memory set aside when SQLite starts. modernc's SQLite is built with
// SQLITE_ENABLE_MEMORY_MANAGEMENT, so every page cache of the process
// draws on one pool behind one mutex, and by default each page is a malloc
// of its own. A reader drops its whole cache when its next transaction
// finds the WAL changed, so after any commit each reader frees every page
// it holds, one by one, under that mutex, and modernc's allocator hands
// freed memory back to the kernel (madvise), a system call at a time. After
// a spell of reads the caches are full: the first write then held every
// reader, and the writer and the indexer, on that mutex for 60–250 ms
// (eight readers and one insert on the benchmark's database; a cursor page
// otherwise takes under 1 ms). Given a buffer at start
// (SQLITE_CONFIG_PAGECACHE), SQLite takes a page from a free list of slots
// in it and puts it back there: no allocator, no system call.
//
// The buffer holds as many 4 KiB pages as one store's caches together
// (pageBufferSlots). Pages beyond it (a second store in the process, or
// larger pages) come from malloc as before. SQLite links every slot into
// its free list when it starts, so the buffer is resident from the first
// Open: memory the caches would fill anyway under load.
//
// Like the page cache wrapper (pcache.go), it must be in place before
// SQLite starts, so it is set up from this package's init; if SQLite
// started already, its choice stands.

// pageBufferPageSize is the page size the buffer's slots are made for:
// SQLite's default, which the store keeps.
const pageBufferPageSize = 4096

// pageBufferSlots is the number of pages in the buffer: every page cache
// of one SQLite store at its cache_size (see writerCacheKiB).
const pageBufferSlots = (writerCacheKiB + readConns*(readerCacheKiB+readerIndexCacheKiB) +
	indexerCacheKiB + indexerIndexCacheKiB + checkpointCacheKiB) * 1024 / pageBufferPageSize

// pageBufferInstalled reports whether SQLite took the buffer. It is set
// once, while the package initializes, before any connection opens.
var pageBufferInstalled = installPageBuffer()

// installPageBuffer gives SQLite the buffer if it has not started. Every
// failure leaves SQLite allocating its pages with malloc.
func installPageBuffer() bool {
	tls := libc.NewTLS()
	defer tls.Close()
	slot, ok := pageBufferSlotSize(tls)
	if !ok {
		return false
	}
	args := libc.Xmalloc(tls, 3*8) // a va_list of three words
	if args == 0 {
		return false
	}
	defer libc.Xfree(tls, args)
	buf := libc.Xmalloc(tls, slot*pageBufferSlots)
	if buf == 0 {
		return false
	}
	if sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PAGECACHE, libc.VaList(args, buf, slot, int32(pageBufferSlots))) != sqlite3.SQLITE_OK {
		libc.Xfree(tls, buf)
		return false
	}
	// The buffer is SQLite's for as long as the process runs.
	return true
}

// pageBufferSlotSize returns the bytes of one slot: a page and SQLite's
// headers for it, rounded up to 8. SQLite answers the headers' size at any
// time, started or not.
func pageBufferSlotSize(tls *libc.TLS) (uint64, bool) {
	args := libc.Xmalloc(tls, 8)
	hdr := libc.Xcalloc(tls, 1, 8)
	defer libc.Xfree(tls, args)
	defer libc.Xfree(tls, hdr)
	if args == 0 || hdr == 0 {
		return 0, false
	}
	if sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PCACHE_HDRSZ, libc.VaList(args, hdr)) != sqlite3.SQLITE_OK {
		return 0, false
	}
	h := *(*uint32)(cptr(hdr)) // a C int, a few hundred bytes
	if h > pageBufferPageSize {
		return 0, false
	}
	return (pageBufferPageSize + uint64(h) + 7) &^ 7, true
}
