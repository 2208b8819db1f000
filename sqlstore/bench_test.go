package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// BenchmarkInsertConcurrent measures durable single-message inserts from 64
// concurrent callers on a SQLite file, as the webhook handler makes them:
// group commit, fsync and all. ns/op is wall time per insert; CPU time per
// insert is what the syncer and the prepared statements change most, so run
// it with -cpu 2 and compare with benchstat.
func BenchmarkInsertConcurrent(b *testing.B) {
	db := openURL(b, fileURL(b, filepath.Join(b.TempDir(), "bench.db")))
	ctx := context.Background()
	var seq atomic.Int64
	b.SetParallelism(32) // 64 callers with -cpu 2
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			text := fmt.Sprintf("bench message %d with a few words of text", n)
			m := msgsvc.Message{
				MessageID: fmt.Sprintf("bench-%d", n),
				From:      fmt.Sprintf("+9198%08d", n%10000),
				To:        "+14155550100",
				TS:        "2026-01-01T00:00:00Z",
				Text:      &text,
			}
			if _, err := db.Insert(ctx, []msgsvc.Message{m}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
