package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
	"github.com/msgsvc/msgsvc/sqlstore"
)

func open(t *testing.T, url string) *sqlstore.DB {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// everything lists every message of st in list order.
func everything(t *testing.T, st msgsvc.Store) []msgsvc.Message {
	t.Helper()
	var all []msgsvc.Message
	q := msgsvc.Query{Limit: msgsvc.MaxLimit}
	for {
		page, err := st.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Messages...)
		if page.Next == nil {
			return all
		}
		q.After = page.Next
	}
}

func TestCopy(t *testing.T) {
	targets := map[string]func(t *testing.T) string{
		"sqlite": func(t *testing.T) string { return "sqlite:///" + filepath.Join(t.TempDir(), "to.db") },
		"postgres": func(t *testing.T) string {
			return pgtest.URL(t)
		},
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			fromURL := "sqlite:///" + filepath.Join(t.TempDir(), "from.db")
			toURL := target(t)

			// 2,345 messages in the source; 10 of them already in the
			// target, with other texts, which the copy must keep.
			src := open(t, fromURL)
			var msgs []msgsvc.Message
			for i := range 2345 {
				m := msgsvc.Message{
					MessageID: fmt.Sprintf("m%05d", i),
					From:      fmt.Sprintf("+1555000%04d", i%37),
					To:        "+15559999999",
					TS:        fmt.Sprintf("2025-01-%02dT%02d:%02d:00Z", 1+i%28, i%24, i%60),
				}
				if i%5 != 0 {
					text := fmt.Sprintf("Hello %d, école 50%%_off", i)
					m.Text = &text
				}
				msgs = append(msgs, m)
			}
			if _, err := src.Insert(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			dst := open(t, toURL)
			var early []msgsvc.Message
			for i := 0; i < 100; i += 10 {
				m := msgs[i]
				text := "already here"
				m.Text = &text
				early = append(early, m)
			}
			if _, err := dst.Insert(ctx, early); err != nil {
				t.Fatal(err)
			}
			if err := dst.Close(); err != nil {
				t.Fatal(err)
			}
			if err := src.Close(); err != nil {
				t.Fatal(err)
			}

			var out bytes.Buffer
			if err := run(ctx, []string{"-from", fromURL, "-to", toURL}, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if want := "done: 2345 messages read, 2335 new in the target, 10 already there"; !strings.Contains(out.String(), want) {
				t.Errorf("output %q lacks %q", out.String(), want)
			}

			src, dst = open(t, fromURL), open(t, toURL)
			defer src.Close()
			defer dst.Close()
			want := everything(t, src)
			for i := range want {
				if strings.HasSuffix(want[i].MessageID, "0") && want[i].MessageID < "m00100" {
					text := "already here"
					want[i].Text = &text
				}
			}
			if got := everything(t, dst); !reflect.DeepEqual(got, want) {
				t.Fatalf("the target lists %d messages, not the %d of the source (first-write-wins kept)", len(got), len(want))
			}
			srcStats, err := src.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dstStats, err := dst.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(srcStats, dstStats) {
				t.Errorf("stats differ:\nsource %+v\ntarget %+v", srcStats, dstStats)
			}
			if err := dst.Close(); err != nil {
				t.Fatal(err)
			}
			if err := src.Close(); err != nil { // a SQLite source is read by one store at a time
				t.Fatal(err)
			}

			// Again: nothing new.
			out.Reset()
			if err := run(ctx, []string{"-from", fromURL, "-to", toURL}, &out); err != nil {
				t.Fatal(err)
			}
			if want := "done: 2345 messages read, 0 new in the target, 2345 already there"; !strings.Contains(out.String(), want) {
				t.Errorf("second run: output %q lacks %q", out.String(), want)
			}
		})
	}
}

func TestCopyUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-from", "sqlite:///a.db"},
		{"-to", "sqlite:///a.db"},
		{"-from", "sqlite:///a.db", "-to", "sqlite:///a.db"},
		{"-from", "sqlite:///a.db", "-to", "sqlite:///b.db", "extra"},
		{"-bogus"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			err := run(context.Background(), args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), "usage") {
				t.Errorf("run(%q) = %v, want a usage error", args, err)
			}
		})
	}
}
