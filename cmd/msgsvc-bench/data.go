package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// The synthetic data: seeded message i is a pure function of i, so the
// query workloads can name real senders, instants and positions without
// keeping a million messages in memory.
const (
	senderPool = 10_000
	seedStep   = 31 * time.Second // about a year for a million messages
)

var seedStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// vocabularySize is the number of distinct words texts are made of.
const vocabularySize = 8000

// vocabulary returns the words texts are made of, most frequent first: made-up
// words of two to four syllables, with a few non-ASCII words and characters
// that must match literally among the common ones.
func vocabulary() []string {
	syll := []string{"ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "po", "se", "da", "gu",
		"be", "chi", "fa", "ho", "ju", "ly", "mo", "nu", "pe", "qi", "sa", "te"}
	special := []string{"école", "Привет", "नमस्ते", "straße", "ÉTÉ", "100%", "snake_case", `back\slash`}
	words := make([]string, 0, vocabularySize)
	for i := 0; len(words) < vocabularySize; i++ {
		if i >= 40 && i-40 < len(special) {
			words = append(words, special[i-40])
			continue
		}
		n := i*7919 + 13 // spread the syllables
		w := ""
		for k := 0; k < 2+i%3; k++ {
			w += syll[n%len(syll)]
			n /= len(syll)
		}
		words = append(words, w)
	}
	return words
}

// wordPicker draws words with Zipf's law, as natural text uses them.
func wordPicker(r *rand.Rand, vocab []string) func() string {
	z := rand.NewZipf(r, 1.1, 1, uint64(len(vocab)-1))
	return func() string { return vocab[z.Uint64()] }
}

func sender(n int) string { return fmt.Sprintf("+9198%08d", n) }

// seedMessage returns seeded message i.
func seedMessage(i int, vocab []string) msgsvc.Message {
	r := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	// A skewed sender distribution: a few senders send most messages.
	s := int(float64(senderPool) * r.Float64() * r.Float64() * r.Float64())
	ts := seedStart.Add(time.Duration(i) * seedStep)
	tsText := ts.Format("2006-01-02T15:04:05Z")
	if i%7 == 0 {
		tsText = ts.Add(time.Duration(r.IntN(1000)) * time.Millisecond).Format("2006-01-02T15:04:05.000Z")
	}
	m := msgsvc.Message{
		MessageID: fmt.Sprintf("seed-%08d", i),
		From:      sender(s),
		To:        "+14155550100",
		TS:        tsText,
	}
	if i%10 != 0 {
		n := 4 + r.IntN(12)
		word := wordPicker(r, vocab)
		var b strings.Builder
		for j := range n {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(word())
		}
		if i%1000 == 1 {
			fmt.Fprintf(&b, " rare%d", i) // a term that few messages carry
		}
		t := b.String()
		m.Text = &t
	}
	return m
}

// seedPosition returns the list position of seeded message i.
func seedPosition(i int, vocab []string) msgsvc.Position {
	m := seedMessage(i, vocab)
	return msgsvc.Position{Key: msgsvc.TimestampKey(m.TS), MessageID: m.MessageID}
}

// seed writes n seeded messages into the database at url through the store
// itself, in large batches from a few goroutines, and returns the rate.
func seed(ctx context.Context, url string, n int) (float64, error) {
	st, err := sqlstore.Open(ctx, url)
	if err != nil {
		return 0, err
	}
	vocab := vocabulary()
	const batch = 1000
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]msgsvc.Message, 0, batch)
			for lo := range next {
				msgs = msgs[:0]
				for i := lo; i < min(lo+batch, n); i++ {
					msgs = append(msgs, seedMessage(i, vocab))
				}
				if _, err := st.Insert(ctx, msgs); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	last := time.Now()
feed:
	for lo := 0; lo < n; lo += batch {
		select {
		case next <- lo:
		case err = <-errc:
			break feed
		}
		if time.Since(last) > 10*time.Second {
			logf("seeded %d of %d", lo, n)
			last = time.Now()
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return float64(n) / time.Since(start).Seconds(), err
}
