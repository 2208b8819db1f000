//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Truncation without a scan for SQLite's page cache. At the end of every
// write transaction SQLite asks the page cache to drop the pages past the
// end of the database (xTruncate). Its default cache (pcache1) remembers
// only the largest page number it ever held, and scans its whole hash
// table, every page it holds, when that number is far past the limit. A
// B-tree balance files a page for a moment under the number of the lock
// page (the page holding byte 2^30, page 262,145 at 4 KiB) and then under
// its own number, so the writer's commits that split a page scanned the
// writer's 8 MB cache: 6% of the daemon's CPU while ingesting at 1M
// messages, on the writer's path.
//
// The wrapper below passes every call to the default cache and keeps, for
// each cache, the page numbers created or renumbered at or past the limit
// of its last truncation: lately the lock page's and the pages a growing
// file added. A truncation calls the default cache only when one of them
// is at or past the new limit, or the limit fell. The wrapper holds the
// largest 13 numbers and only the largest of the others; pages it does not
// hear of being dropped stay counted; so it errs only towards calling the
// default cache.
//
// SQLite takes a page cache only before it starts (sqlite3_config before
// sqlite3_initialize), and the setting is one per process: it is installed
// from this package's init, before any connection opens. If SQLite was
// started already, or a program installs a cache of its own afterwards,
// SQLite's choice stands and nothing changes but speed.

// truncCache is the wrapper's state for one cache, in C memory: SQLite
// keeps its address as the cache's handle. Every page filed at or past
// limit is in high, or at most spilled.
type truncCache struct {
	inner   uintptr // the default cache's handle
	limit   uint32  // the limit of the last truncation
	spilled uint32  // the largest page number that did not fit in high; 0 for none
	n       uint32  // page numbers in high
	high    [13]uint32
}

// pcacheDefault holds the default cache's methods, read once by
// installPageCache before SQLite starts and never written after.
var pcacheDefault sqlite3.Tsqlite3_pcache_methods2

// pageCacheInstalled reports whether SQLite took the wrapper. It is set
// once, while the package initializes, before any connection opens.
var pageCacheInstalled = installPageCache()

// installPageCache puts the wrapper in place if SQLite has not started.
// Every failure leaves SQLite's own cache in place.
func installPageCache() bool {
	tls := libc.NewTLS()
	defer tls.Close()
	size := uint64(unsafe.Sizeof(pcacheDefault))
	methods := libc.Xcalloc(tls, 1, size)
	args := libc.Xmalloc(tls, 8)
	if methods == 0 || args == 0 {
		libc.Xfree(tls, methods)
		libc.Xfree(tls, args)
		return false
	}
	defer libc.Xfree(tls, args)
	if sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_GETPCACHE2, libc.VaList(args, methods)) != sqlite3.SQLITE_OK {
		libc.Xfree(tls, methods)
		return false
	}
	m := (*sqlite3.Tsqlite3_pcache_methods2)(cptr(methods))
	if m.FxCreate == 0 || m.FxTruncate == 0 {
		libc.Xfree(tls, methods)
		return false
	}
	pcacheDefault = *m
	m.FxCreate = cFunc(tcCreate)
	m.FxCachesize = cFunc(tcCachesize)
	m.FxPagecount = cFunc(tcPagecount)
	m.FxFetch = cFunc(tcFetch)
	m.FxUnpin = cFunc(tcUnpin)
	m.FxRekey = cFunc(tcRekey)
	m.FxTruncate = cFunc(tcTruncate)
	m.FxDestroy = cFunc(tcDestroy)
	m.FxShrink = cFunc(tcShrink)
	if sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PCACHE2, libc.VaList(args, methods)) != sqlite3.SQLITE_OK {
		libc.Xfree(tls, methods)
		return false
	}
	// SQLite copied the table; it is not freed, as the copy's functions
	// read pcacheDefault for as long as the process runs.
	return true
}

func tcOf(p uintptr) *truncCache { return (*truncCache)(cptr(p)) }

// note records that a page is filed under key. When high is full, the
// smallest number gives way: a renumbered page is filed for a moment
// under the lock page's number, past every other, and must stay where
// forget can take it out again.
func (c *truncCache) note(key uint32) {
	if key < c.limit {
		return
	}
	low := 0
	for i, k := range c.high[:c.n] {
		if k == key {
			return
		}
		if k < c.high[low] {
			low = i
		}
	}
	if int(c.n) < len(c.high) {
		c.high[c.n] = key
		c.n++
		return
	}
	if key < c.high[low] {
		c.spilled = max(c.spilled, key)
		return
	}
	c.spilled = max(c.spilled, c.high[low])
	c.high[low] = key
}

// forget records that no page is filed under key any more.
func (c *truncCache) forget(key uint32) {
	for i, k := range c.high[:c.n] {
		if k == key {
			c.n--
			c.high[i] = c.high[c.n]
			return
		}
	}
}

// mustTruncate reports whether a page may be filed at or past limit.
func (c *truncCache) mustTruncate(limit uint32) bool {
	if limit < c.limit || c.spilled >= limit {
		return true
	}
	for _, k := range c.high[:c.n] {
		if k >= limit {
			return true
		}
	}
	return false
}

func tcCreate(tls *libc.TLS, szPage, szExtra, bPurgeable int32) uintptr {
	p := libc.Xcalloc(tls, 1, uint64(unsafe.Sizeof(truncCache{})))
	if p == 0 {
		return 0
	}
	inner := goFunc[func(*libc.TLS, int32, int32, int32) uintptr](pcacheDefault.FxCreate)(tls, szPage, szExtra, bPurgeable)
	if inner == 0 {
		libc.Xfree(tls, p)
		return 0
	}
	tcOf(p).inner = inner // limit 0: every page number counts until the first truncation
	return p
}

func tcCachesize(tls *libc.TLS, p uintptr, nMax int32) {
	goFunc[func(*libc.TLS, uintptr, int32)](pcacheDefault.FxCachesize)(tls, tcOf(p).inner, nMax)
}

func tcPagecount(tls *libc.TLS, p uintptr) int32 {
	return goFunc[func(*libc.TLS, uintptr) int32](pcacheDefault.FxPagecount)(tls, tcOf(p).inner)
}

func tcFetch(tls *libc.TLS, p uintptr, key uint32, createFlag int32) uintptr {
	c := tcOf(p)
	pg := goFunc[func(*libc.TLS, uintptr, uint32, int32) uintptr](pcacheDefault.FxFetch)(tls, c.inner, key, createFlag)
	if pg != 0 && createFlag != 0 {
		c.note(key)
	}
	return pg
}

func tcUnpin(tls *libc.TLS, p, pPg uintptr, discard int32) {
	goFunc[func(*libc.TLS, uintptr, uintptr, int32)](pcacheDefault.FxUnpin)(tls, tcOf(p).inner, pPg, discard)
}

func tcRekey(tls *libc.TLS, p, pPg uintptr, oldKey, newKey uint32) {
	c := tcOf(p)
	goFunc[func(*libc.TLS, uintptr, uintptr, uint32, uint32)](pcacheDefault.FxRekey)(tls, c.inner, pPg, oldKey, newKey)
	c.forget(oldKey)
	c.note(newKey)
}

func tcTruncate(tls *libc.TLS, p uintptr, limit uint32) {
	c := tcOf(p)
	if c.mustTruncate(limit) {
		goFunc[func(*libc.TLS, uintptr, uint32)](pcacheDefault.FxTruncate)(tls, c.inner, limit)
	}
	// No page is filed at or past limit now; those below it no longer
	// matter until a truncation to a lower limit, which calls through.
	c.limit, c.n, c.spilled = limit, 0, 0
}

func tcDestroy(tls *libc.TLS, p uintptr) {
	goFunc[func(*libc.TLS, uintptr)](pcacheDefault.FxDestroy)(tls, tcOf(p).inner)
	libc.Xfree(tls, p)
}

func tcShrink(tls *libc.TLS, p uintptr) {
	goFunc[func(*libc.TLS, uintptr)](pcacheDefault.FxShrink)(tls, tcOf(p).inner)
}
