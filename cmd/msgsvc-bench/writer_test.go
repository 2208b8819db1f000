package main

import (
	"strings"
	"testing"
)

func TestWriterCycle(t *testing.T) {
	const before = `# HELP store_batch_messages Messages per write transaction.
# TYPE store_batch_messages histogram
store_batch_messages_bucket{le="1"} 3
store_batch_messages_sum 10
store_batch_messages_count 5
store_commit_seconds_sum 0.01
store_commit_seconds_count 5
store_wal_sync_seconds_sum 0.005
store_wal_sync_seconds_count 5
store_insert_seconds_sum 0.1
store_insert_seconds_count 10
store_failed_batches_total 0
store_index_lag_messages 7
http_requests_total{path="/webhook",status="200"} 10
`
	const after = `store_batch_messages_sum 110
store_batch_messages_count 10
store_commit_seconds_sum 0.02
store_commit_seconds_count 10
store_wal_sync_seconds_sum 0.015
store_wal_sync_seconds_count 10
store_insert_seconds_sum 0.6
store_insert_seconds_count 110
store_failed_batches_total 1
store_index_lag_messages 3
`
	a, err := parseStoreSample(strings.NewReader(before))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a["store_batch_messages_bucket{le=\"1\"}"]; ok || len(a) != 10 {
		t.Errorf("parsed %v: want the 10 unlabelled store_ series", a)
	}
	b, err := parseStoreSample(strings.NewReader(after))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a, b storeSample
		want string
	}{
		{"sqlite", a, b, "5 batches of 20.0 messages; mean commit 2.00 ms; mean WAL fsync 2.00 ms; mean Insert call 5.00 ms; 1 failed batches; index lag at the end 3 messages"},
		{"no batches", b, b, "no batches"},
		{"checkpoints", storeSample{"store_checkpoint_seconds_sum": 0.1, "store_checkpoint_seconds_count": 4, "store_checkpoint_hold_seconds_count": 1},
			storeSample{"store_batch_messages_sum": 32, "store_batch_messages_count": 2,
				"store_checkpoint_seconds_sum": 0.25, "store_checkpoint_seconds_count": 10,
				"store_checkpoint_hold_seconds_sum": 0.024, "store_checkpoint_hold_seconds_count": 3},
			"2 batches of 16.0 messages; 6 checkpoints of 25.0 ms; the writer held 2 times for the WAL to start over, 12.0 ms each"},
		{"postgres", storeSample{}, storeSample{"store_batch_messages_sum": 8, "store_batch_messages_count": 2,
			"store_commit_seconds_sum": 0.004, "store_commit_seconds_count": 2}, "2 batches of 4.0 messages; mean commit 2.00 ms"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := writerCycle(c.a, c.b); got != c.want {
				t.Errorf("writerCycle =\n%s\nwant\n%s", got, c.want)
			}
		})
	}
	if _, err := parseStoreSample(strings.NewReader("store_batch_messages_sum NaNx\n")); err == nil {
		t.Error("a bad value parsed")
	}
}
