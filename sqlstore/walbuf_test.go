//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// walWrites sums, over the WAL files open through the write-combining VFS
// at path, the writes handed to the default VFS, the xWrite calls SQLite
// made, and those that did not follow on from what was gathered.
func walWrites(path string) (writes, calls, scattered int64) {
	walBufs.Range(func(_, v any) bool {
		if f := v.(*walBuf); f.name == path {
			writes += f.writes
			calls += f.calls
			scattered += f.scattered
		}
		return true
	})
	return writes, calls, scattered
}

// TestWALWritesCombined: the writer's WAL gets a few writes per commit
// instead of two per page, and the file alone, recovered as after a power
// loss, holds every acknowledged row. A commit whose frames were left in the
// buffer would fail its checksum on recovery and be dropped.
func TestWALWritesCombined(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	holdCheckpointer(t, db)
	ids := map[string]bool{}
	for b := range 100 {
		var batch []msgsvc.Message
		for i := range 20 {
			m := testMessage(fmt.Sprintf("b%03d-%02d", b, i))
			m.From = fmt.Sprintf("+1202555%04d", (b*20+i)%997)
			batch = append(batch, m)
			ids[m.MessageID] = true
		}
		if _, err := db.Insert(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	writes, calls, _ := walWrites(db.walPath)
	t.Logf("%d xWrite calls in %d writes", calls, writes)
	if calls < 1000 {
		t.Fatalf("%d xWrite calls for 100 commits: the WAL is not opened through the write-combining VFS", calls)
	}
	if writes*4 > calls {
		t.Errorf("%d writes for %d xWrite calls: not combined", writes, calls)
	}
	checkRecovered(t, crashCopy(t, db), ids)
}

// TestWALSpillRecovered: a transaction larger than the writer's page cache
// spills frames to the WAL before its commit, and SQLite may write a page
// again in place and rewrite the checksums of the frames after it. Those
// writes go around and through the buffer, and the recovered file still
// holds every row.
func TestWALSpillRecovered(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	holdCheckpointer(t, db)
	// A page cache of 1 MB instead of writerCacheKiB spills with about a
	// quarter of the rows (the race detector makes SQLite about ten times
	// slower): 400 rows a round spill as 1,500 did with the full cache,
	// and 200 did not.
	if _, err := db.write.ExecContext(ctx, `PRAGMA cache_size = -1000`); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	text := strings.Repeat("é", msgsvc.MaxTextLen-8) // 8 KB a text, and as much folded
	for round := range 2 {
		var batch []msgsvc.Message
		for i := range 400 {
			m := testMessage(fmt.Sprintf("r%d-%04d", round, i))
			m.From = fmt.Sprintf("+1202555%04d", i%37)
			tx := fmt.Sprintf("%s %d", text, i)
			m.Text = &tx
			batch = append(batch, m)
			ids[m.MessageID] = true
		}
		if _, err := db.Insert(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// A page written again in place, or a checksum rewritten, lands
	// away from the end of what was gathered.
	if _, _, scattered := walWrites(db.walPath); scattered == 0 {
		t.Error("no WAL write landed away from the gathered ones: the test no longer spills")
	}
	checkRecovered(t, crashCopy(t, db), ids)
}
