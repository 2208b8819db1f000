//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"fmt"
	"sync"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Write-combining for the WAL. SQLite writes each WAL frame with two
// pwrite calls, its 24-byte header and then its page, so a commit of 60
// pages costs 120 system calls, each of them slow on a virtual machine.
// The writer's and the indexer's connections open their files through a
// VFS that wraps SQLite's default one and, for WAL files only, gathers
// contiguous writes in a buffer and hands them to the file in one pwrite.
//
// What keeps it safe: the buffer is written out before the header of a
// commit frame is written, and that header and the page after it go
// straight to the file. A commit frame is the last frame of a transaction,
// and SQLite publishes the transaction to readers (the WAL index header)
// only after writing it, so no reader, checkpoint or fsync (walsync.go) can
// see a committed frame that is still in the buffer. A failed write of the
// buffer fails the commit-frame write that caused it, and with it the
// commit, before anything is published. Every other call on the file
// (read, sync, size, truncate, file control, close) writes the buffer out
// first, so SQLite never sees the file differ from what it wrote.
//
// SQLite's VFS registry is one per process, so the VFS is registered once,
// and the Go state of each open WAL file is found by its sqlite3_file
// address in walBufs. Neither is shared between stores: each file has its
// own entry, used only by the connection that opened it.

// walVFSName is the name the write-combining VFS is registered under.
const walVFSName = "msgsvc-walbuf"

const (
	// walBufSize is the most bytes gathered for one write: the most the
	// default VFS hands to one pwrite (it masks a length with 0x1ffff, so a
	// longer write would be split, or fail at exactly 128 KiB).
	walBufSize          = 0x1ffff
	walFrameHeaderBytes = 24 // a WAL frame's header; bytes 4-7 are nonzero in a commit frame
)

// walVFS is the registration, done once per process by registerWALVFS.
var walVFS struct {
	once     sync.Once
	err      error
	origVFS  uintptr // the default VFS, which opens and does the I/O
	origOpen uintptr // its xOpen

	mu      sync.Mutex
	methods map[uintptr]uintptr // the default VFS's io methods of a WAL file -> the combining copy
}

// walBufs maps the address of each open WAL file to its *walBuf.
var walBufs sync.Map

// walBuf is the Go side of one WAL file opened through the VFS.
type walBuf struct {
	orig   sqlite3.Tsqlite3_io_methods // the default VFS's methods for it
	buf    uintptr                     // C memory of walBufSize bytes; 0 until the first gathered write
	off    int64                       // the file offset of buf's first byte
	n      int64                       // bytes gathered
	direct int64                       // the offset of a commit frame's page, which goes straight through; -1 for none

	name          string // the file's path (tests)
	writes, calls int64  // writes handed to the default VFS, and xWrite calls received (tests)
	scattered     int64  // xWrite calls that did not follow on from what was gathered (tests)
}

// walVFSReady registers the VFS if needed and returns its name for the
// vfs parameter of a DSN, or an error if SQLite refused it.
func walVFSReady() (string, error) {
	walVFS.once.Do(func() { walVFS.err = registerWALVFS() })
	return walVFSName, walVFS.err
}

func registerWALVFS() error {
	tls := libc.NewTLS()
	defer tls.Close()
	orig := sqlite3.Xsqlite3_vfs_find(tls, 0)
	if orig == 0 {
		return fmt.Errorf("sqlstore: SQLite has no default VFS")
	}
	v := *(*sqlite3.Tsqlite3_vfs)(cptr(orig))
	name, err := libc.CString(walVFSName)
	if err != nil {
		return err
	}
	walVFS.origVFS, walVFS.origOpen = orig, v.FxOpen
	walVFS.methods = map[uintptr]uintptr{}
	v.FpNext = 0
	v.FzName = name
	v.FxOpen = cFunc(walOpen)
	p := libc.Xmalloc(tls, uint64(unsafe.Sizeof(v)))
	if p == 0 {
		return fmt.Errorf("sqlstore: out of memory registering the WAL VFS")
	}
	*(*sqlite3.Tsqlite3_vfs)(cptr(p)) = v
	if rc := sqlite3.Xsqlite3_vfs_register(tls, p, 0); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlstore: registering the WAL VFS: SQLite error %d", rc)
	}
	return nil
}

// cFunc returns f as a function pointer SQLite can call; f must be a
// function declaration, never a closure.
func cFunc[T any](f T) uintptr {
	return *(*uintptr)(unsafe.Pointer(&struct{ f T }{f}))
}

// cptr returns the address p, of memory SQLite allocated (outside Go's
// heap), as a pointer Go can read and write through.
func cptr(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}

// goFunc returns the function pointer fp, taken from SQLite, as the Go
// function of type T that it is in modernc's SQLite.
func goFunc[T any](fp uintptr) T {
	return *(*T)(unsafe.Pointer(&fp))
}

// walOpen is the VFS's xOpen: the default VFS opens the file, and a WAL
// file gets the combining methods.
func walOpen(tls *libc.TLS, _, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	rc := goFunc[func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32](walVFS.origOpen)(tls, walVFS.origVFS, zName, pFile, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	file := (*sqlite3.Tsqlite3_file)(cptr(pFile))
	if file.FpMethods == 0 {
		return rc
	}
	f := &walBuf{direct: -1, name: libc.GoString(zName), orig: *(*sqlite3.Tsqlite3_io_methods)(cptr(file.FpMethods))}
	combining := combiningMethods(tls, file.FpMethods, f.orig)
	if combining == 0 {
		return rc // no memory for the table: the file works as SQLite opened it
	}
	walBufs.Store(pFile, f)
	file.FpMethods = combining
	return rc
}

// combiningMethods returns the combining copy of the io methods at orig,
// made once for each table the default VFS uses.
func combiningMethods(tls *libc.TLS, orig uintptr, m sqlite3.Tsqlite3_io_methods) uintptr {
	walVFS.mu.Lock()
	defer walVFS.mu.Unlock()
	if p, ok := walVFS.methods[orig]; ok {
		return p
	}
	m.FxClose = cFunc(walClose)
	m.FxRead = cFunc(walRead)
	m.FxWrite = cFunc(walWrite)
	m.FxTruncate = cFunc(walTruncate)
	m.FxSync = cFunc(walSync)
	m.FxFileSize = cFunc(walFileSize)
	m.FxFileControl = cFunc(walFileControl)
	p := libc.Xmalloc(tls, uint64(unsafe.Sizeof(m)))
	if p == 0 {
		return 0
	}
	*(*sqlite3.Tsqlite3_io_methods)(cptr(p)) = m
	walVFS.methods[orig] = p
	return p
}

// walBufOf returns the state of the WAL file at pFile.
func walBufOf(pFile uintptr) *walBuf {
	f, ok := walBufs.Load(pFile)
	if !ok {
		panic(fmt.Sprintf("sqlstore: no WAL file at %#x", pFile))
	}
	return f.(*walBuf)
}

// commitHeader reports whether the frame header at p (24 bytes) is a
// commit frame's: its database size after the commit is nonzero.
func commitHeader(p uintptr) bool {
	return *(*[4]byte)(cptr(p + 4)) != [4]byte{}
}

// write hands n bytes at p to the default VFS at file offset off.
func (f *walBuf) write(tls *libc.TLS, pFile, p uintptr, n int32, off int64) int32 {
	f.writes++
	return goFunc[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](f.orig.FxWrite)(tls, pFile, p, n, off)
}

// flush writes what is gathered. The buffer is emptied even when the write
// fails: SQLite treats the error as the failure of its own write and rolls
// back, and what it writes next starts afresh.
func (f *walBuf) flush(tls *libc.TLS, pFile uintptr) int32 {
	if f.n == 0 {
		return sqlite3.SQLITE_OK
	}
	n := f.n
	f.n = 0
	return f.write(tls, pFile, f.buf, int32(n), f.off)
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f := walBufOf(pFile)
	f.calls++
	if iAmt == walFrameHeaderBytes && commitHeader(zBuf) {
		// Everything before the commit frame reaches the file first.
		if rc := f.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
		f.direct = iOfst + walFrameHeaderBytes
		return f.write(tls, pFile, zBuf, iAmt, iOfst)
	}
	if iOfst == f.direct {
		f.direct = -1
		if rc := f.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
		return f.write(tls, pFile, zBuf, iAmt, iOfst)
	}
	if f.n > 0 && iOfst != f.off+f.n {
		f.scattered++
	}
	if f.n > 0 && (iOfst != f.off+f.n || f.n+int64(iAmt) > walBufSize) {
		if rc := f.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if int64(iAmt) > walBufSize {
		return f.write(tls, pFile, zBuf, iAmt, iOfst)
	}
	if f.buf == 0 {
		if f.buf = libc.Xmalloc(tls, walBufSize); f.buf == 0 {
			return f.write(tls, pFile, zBuf, iAmt, iOfst)
		}
	}
	if f.n == 0 {
		f.off = iOfst
	}
	libc.Xmemcpy(tls, f.buf+uintptr(f.n), zBuf, uint64(iAmt))
	f.n += int64(iAmt)
	return sqlite3.SQLITE_OK
}

// flushed returns the state of the WAL file at pFile once what it
// gathered is written, or the error of that write. Every method but
// xWrite and xClose starts with it, then calls the default VFS's own.
func flushed(tls *libc.TLS, pFile uintptr) (*walBuf, int32) {
	f := walBufOf(pFile)
	return f, f.flush(tls, pFile)
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return goFunc[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](f.orig.FxRead)(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	f, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return goFunc[func(*libc.TLS, uintptr, int64) int32](f.orig.FxTruncate)(tls, pFile, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	f, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return goFunc[func(*libc.TLS, uintptr, int32) int32](f.orig.FxSync)(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	f, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return goFunc[func(*libc.TLS, uintptr, uintptr) int32](f.orig.FxFileSize)(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	f, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return goFunc[func(*libc.TLS, uintptr, int32, uintptr) int32](f.orig.FxFileControl)(tls, pFile, op, pArg)
}

// walClose writes what is gathered, closes the file and frees the buffer.
// The file is closed whatever the write gave, and its error is returned.
func walClose(tls *libc.TLS, pFile uintptr) int32 {
	f := walBufOf(pFile)
	rc := f.flush(tls, pFile)
	crc := goFunc[func(*libc.TLS, uintptr) int32](f.orig.FxClose)(tls, pFile)
	walBufs.Delete(pFile)
	if f.buf != 0 {
		libc.Xfree(tls, f.buf)
		f.buf = 0
	}
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return crc
}
