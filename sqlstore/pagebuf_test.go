//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"context"
	"fmt"
	"testing"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/msgsvc/msgsvc"
)

// sqliteStatus returns SQLite's process-wide counter op: its current value
// and its highest since the process started.
func sqliteStatus(t *testing.T, op int32) (current, highest int64) {
	t.Helper()
	tls := libc.NewTLS()
	defer tls.Close()
	p := libc.Xcalloc(tls, 2, 8)
	if p == 0 {
		t.Fatal("out of C memory")
	}
	defer libc.Xfree(tls, p)
	if rc := sqlite3.Xsqlite3_status64(tls, op, p, p+8, 0); rc != sqlite3.SQLITE_OK {
		t.Fatalf("sqlite3_status64(%d): %d", op, rc)
	}
	return *(*int64)(cptr(p)), *(*int64)(cptr(p + 8))
}

// TestPageBuffer checks that SQLite took the page buffer and that a store's
// pages come from it: its slots are in use once a store has read and
// written, and a page with SQLite's headers fits in a slot.
func TestPageBuffer(t *testing.T) {
	if !pageBufferInstalled {
		t.Fatal("SQLite did not take the page buffer (pagebuf.go): it was started before this package initialized")
	}
	db, _ := openFile(t)
	ctx := context.Background()
	msgs := make([]msgsvc.Message, 500)
	for i := range msgs {
		msgs[i] = testMessage(fmt.Sprintf("buf-%d", i))
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	page, err := db.List(ctx, msgsvc.Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != int64(len(msgs)) || len(page.Messages) != 100 {
		t.Fatalf("List: total %d, %d messages; want %d, 100", page.Total, len(page.Messages), len(msgs))
	}
	used, _ := sqliteStatus(t, sqlite3.SQLITE_STATUS_PAGECACHE_USED)
	if used <= 0 || used > pageBufferSlots {
		t.Errorf("%d of the buffer's %d slots in use with a store open; want some, at most all", used, pageBufferSlots)
	}
	_, largest := sqliteStatus(t, sqlite3.SQLITE_STATUS_PAGECACHE_SIZE)
	tls := libc.NewTLS()
	defer tls.Close()
	slot, ok := pageBufferSlotSize(tls)
	if !ok {
		t.Fatal("SQLite did not tell the size of its page headers")
	}
	if uint64(largest) > slot {
		t.Errorf("SQLite asked for %d bytes a page, more than a slot's %d: every page would come from malloc", largest, slot)
	}
}
