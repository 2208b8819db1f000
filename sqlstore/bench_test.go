package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkList measures List over 50,000 stored messages, one request at a
// time, for the kinds of page the mixed /messages load asks for most: a
// cursor page anywhere, an offset page, and pages filtered by sender, by
// instant and by a word. The words and senders repeat, so q's count is
// remembered after its first request, as in the daemon's steady state.
func BenchmarkList(b *testing.B) {
	const n, senders = 50_000, 500
	db := openURL(b, fileURL(b, filepath.Join(b.TempDir(), "bench.db")))
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"}
	msgs := make([]msgsvc.Message, 0, 1000)
	for i := range n {
		text := fmt.Sprintf("message %d says %s and %s", i, words[i%len(words)], words[i*7%len(words)])
		msgs = append(msgs, msgsvc.Message{
			MessageID: fmt.Sprintf("list-%06d", i), From: fmt.Sprintf("+9198%08d", i%senders), To: "+14155550100",
			TS: start.Add(time.Duration(i) * time.Minute).Format(time.RFC3339), Text: &text,
		})
		if len(msgs) == cap(msgs) || i == n-1 {
			if _, err := db.Insert(ctx, msgs); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	for _, c := range []struct {
		name string
		q    func(i int) msgsvc.Query
	}{
		{"cursor", func(i int) msgsvc.Query {
			m := i * 7919 % n
			return msgsvc.Query{Limit: 20, After: &msgsvc.Position{
				Key: msgsvc.InstantKey(start.Add(time.Duration(m) * time.Minute)), MessageID: fmt.Sprintf("list-%06d", m)}}
		}},
		{"offset", func(i int) msgsvc.Query { return msgsvc.Query{Limit: 20, Offset: i * 7919 % 10_000} }},
		{"from", func(i int) msgsvc.Query { return msgsvc.Query{Limit: 20, From: fmt.Sprintf("+9198%08d", i%senders)} }},
		{"since", func(i int) msgsvc.Query {
			since := start.Add(time.Duration(i*7919%n) * time.Minute)
			return msgsvc.Query{Limit: 20, Since: &since}
		}},
		{"q", func(i int) msgsvc.Query { return msgsvc.Query{Limit: 20, Text: words[i%len(words)]} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := db.List(ctx, c.q(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkReadAfterWrite measures the first reads after a commit, when
// the readers' caches are full: each op is one insert and then a cursor page
// on every reader at once, the readers having first read their caches full
// (untimed). A reader drops its cache when it sees the commit, which is
// what the page buffer (pagebuf.go) makes cheap; compare it with benchstat
// across a change to the page caches.
func BenchmarkReadAfterWrite(b *testing.B) {
	const n = 50_000
	db := openURL(b, fileURL(b, filepath.Join(b.TempDir(), "bench.db")))
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	msgs := make([]msgsvc.Message, 0, 1000)
	for i := range n {
		text := fmt.Sprintf("message %d with some words of text to fill the pages", i)
		msgs = append(msgs, msgsvc.Message{
			MessageID: fmt.Sprintf("raw-%06d", i), From: fmt.Sprintf("+9198%08d", i%500), To: "+14155550100",
			TS: start.Add(time.Duration(i) * time.Minute).Format(time.RFC3339), Text: &text,
		})
		if len(msgs) == cap(msgs) {
			if _, err := db.Insert(ctx, msgs); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	page := func(i int) error {
		m := i * 7919 % n
		_, err := db.List(ctx, msgsvc.Query{Limit: 50, After: &msgsvc.Position{
			Key: msgsvc.InstantKey(start.Add(time.Duration(m) * time.Minute)), MessageID: fmt.Sprintf("raw-%06d", m)}})
		return err
	}
	// readAll runs per cursor pages on each of readConns readers at once.
	readAll := func(per, from int) error {
		errs := make(chan error, readConns)
		for r := range readConns {
			go func() {
				var err error
				for i := range per {
					if err == nil {
						err = page(from + r*per + i)
					}
				}
				errs <- err
			}()
		}
		var first error
		for range readConns {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if err := readAll(300, i*readConns*300); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(fmt.Sprintf("raw-write-%d", i))}); err != nil {
			b.Fatal(err)
		}
		if err := readAll(1, i); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStats measures Stats over 1,000 messages from 100 senders, one
// call at a time: "idle" with no commit between calls, "ingesting" with a
// commit before each call, as under a steady stream of webhooks.
func BenchmarkStats(b *testing.B) {
	db := openURL(b, fileURL(b, filepath.Join(b.TempDir(), "bench.db")))
	ctx := context.Background()
	msgs := make([]msgsvc.Message, 1000)
	for i := range msgs {
		msgs[i] = testMessage(fmt.Sprintf("seed-%d", i))
		msgs[i].From = fmt.Sprintf("+9198%08d", i%100)
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		b.Fatal(err)
	}
	b.Run("idle", func(b *testing.B) {
		for b.Loop() {
			if _, err := db.Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ingesting", func(b *testing.B) {
		var n int
		for b.Loop() {
			b.StopTimer()
			n++
			if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(fmt.Sprintf("new-%d", n))}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := db.Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
