package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// statsFromTables reads what Stats must answer straight from the tables,
// past the cache.
func statsFromTables(t *testing.T, db *DB) (total, senders int64) {
	t.Helper()
	err := db.read.QueryRowContext(context.Background(), `SELECT count(*), count(DISTINCT sender) FROM messages`).Scan(&total, &senders)
	if err != nil {
		t.Fatal(err)
	}
	return total, senders
}

// TestStatsNeverStale has callers insert while others read Stats: every
// answer counts at least every message acknowledged before the Stats call
// began, and between commits the cache answers without reading the tables.
func TestStatsNeverStale(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	const writers, each, readers = 8, 40, 4
	var acked atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				before := acked.Load()
				st, err := db.Stats(ctx)
				if err != nil {
					errs <- err
					return
				}
				if st.TotalMessages < before {
					errs <- fmt.Errorf("Stats counts %d messages after %d were acknowledged", st.TotalMessages, before)
					return
				}
			}
		})
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			for i := range each {
				m := testMessage(fmt.Sprintf("w%d-%d", w, i))
				m.From = fmt.Sprintf("+9198%08d", (w*each+i)%13)
				created, err := db.Insert(ctx, []msgsvc.Message{m})
				if err != nil || !created[0] {
					t.Errorf("Insert %s: %v, %v", m.MessageID, created, err)
					return
				}
				acked.Add(1)
			}
		})
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total, senders := statsFromTables(t, db)
	if st.TotalMessages != total || st.SendersCount != senders || total != writers*each {
		t.Errorf("Stats: %d messages from %d senders; the table holds %d from %d; %d were acknowledged",
			st.TotalMessages, st.SendersCount, total, senders, writers*each)
	}
	// No commit since: the next answer comes from the cache, at the
	// generation it was read at.
	gen := db.writes.Load()
	if cached, ok := db.stats.get(gen); !ok || cached.TotalMessages != total {
		t.Errorf("cache at generation %d: %+v, %v; want the last answer", gen, cached, ok)
	}
}

// TestStatsAfterFailedBatch checks that a failed batch moves the generation
// on too: Stats then reads the tables again, and still agrees with them.
func TestStatsAfterFailedBatch(t *testing.T) {
	ctx := context.Background()
	db := openBoom(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	gen := db.writes.Load()
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("boom")}); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Insert boom: %v, want ErrUnavailable", err)
	}
	if db.writes.Load() == gen {
		t.Error("a failed batch left the write generation as it was")
	}
	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total, _ := statsFromTables(t, db); st.TotalMessages != total || total != 1 {
		t.Errorf("Stats counts %d messages; the table holds %d, want 1", st.TotalMessages, total)
	}
}

// TestStatsAnswersAreCopies checks that a caller changing an answer does
// not change the next one.
func TestStatsAnswersAreCopies(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("a"), testMessage("b")}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // read, then twice from the cache
		st, err := db.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.TopSenders) != 1 || st.TopSenders[0].Count != 2 || st.FirstTS == nil || *st.FirstTS != "2025-01-15T10:00:00Z" {
			t.Fatalf("answer %d: %+v", i, st)
		}
		st.TopSenders[0].Count = 99
		*st.FirstTS = "changed"
	}
}

// TestStatsAfterClose checks that a closed store does not answer from its
// cache.
func TestStatsAfterClose(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	if _, err := db.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Stats(ctx); !errors.Is(err, msgsvc.ErrClosed) {
		t.Errorf("Stats after Close: %v, want ErrClosed", err)
	}
}
