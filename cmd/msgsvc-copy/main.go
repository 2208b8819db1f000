// Command msgsvc-copy copies every message from one msgsvc database to
// another, for example from the embedded SQLite file to Postgres when one
// machine is no longer enough:
//
//	msgsvc-copy -from sqlite:////var/lib/msgsvc/app.db -to 'postgres://msgsvc@db/msgsvc'
//
// It reads the source in list order, a page at a time, and inserts each page
// into the target in one transaction, through the same Store methods the
// daemon uses, so the target's counters stay exact. Inserts are idempotent:
// a message already in the target (same message_id) is left as it is, so
// the copy can run while daemons still write to the target, and can be run
// again after an interruption; it then skips what is there. The source is
// only read.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "msgsvc-copy:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// counts is what a copy did.
type counts struct {
	read, created, present int64
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("msgsvc-copy", flag.ContinueOnError)
	fs.SetOutput(out)
	from := fs.String("from", "", "database URL to copy from (read only), e.g. sqlite:////var/lib/msgsvc/app.db")
	to := fs.String("to", "", "database URL to copy into, e.g. postgres://user@host/db; migrated when new")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: msgsvc-copy -from URL -to URL", errUsage)
	}
	if *from == *to {
		return fmt.Errorf("%w: -from and -to name the same database", errUsage)
	}
	src, err := sqlstore.Open(ctx, *from)
	if err != nil {
		return fmt.Errorf("opening -from: %w", err)
	}
	defer src.Close()
	dst, err := sqlstore.Open(ctx, *to)
	if err != nil {
		return fmt.Errorf("opening -to: %w", err)
	}
	c, err := copyAll(ctx, src, dst, func(c counts, total int64) {
		fmt.Fprintf(out, "copied %d of %d messages (%d new, %d already there)\n", c.read, total, c.created, c.present)
	})
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing -to: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("after %d messages: %w", c.read, err)
	}
	fmt.Fprintf(out, "done: %d messages read, %d new in the target, %d already there\n", c.read, c.created, c.present)
	return nil
}

// copyBatch is how many messages go into one target transaction.
const copyBatch = 1000

// copyAll walks src in list order with keyset positions and inserts the
// messages into dst, copyBatch at a time. progress is called every few
// seconds and at the end.
func copyAll(ctx context.Context, src, dst msgsvc.Store, progress func(counts, int64)) (counts, error) {
	var c counts
	var batch []msgsvc.Message
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		created, err := dst.Insert(ctx, batch)
		if err != nil {
			return fmt.Errorf("writing: %w", err)
		}
		for _, ok := range created {
			if ok {
				c.created++
			} else {
				c.present++
			}
		}
		c.read += int64(len(batch))
		batch = batch[:0]
		return nil
	}
	q := msgsvc.Query{Limit: msgsvc.MaxLimit}
	last := time.Now()
	for {
		page, err := src.List(ctx, q)
		if err != nil {
			return c, fmt.Errorf("reading: %w", err)
		}
		batch = append(batch, page.Messages...)
		if len(batch) >= copyBatch || page.Next == nil {
			if err := flush(); err != nil {
				return c, err
			}
		}
		if page.Next == nil {
			progress(c, page.Total)
			return c, nil
		}
		if time.Since(last) > 5*time.Second {
			progress(c, page.Total)
			last = time.Now()
		}
		q.After = page.Next
	}
}
