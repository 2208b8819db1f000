//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/msgsvc/msgsvc"
)

// setFileSizeLimit sets the soft RLIMIT_FSIZE of process pid (hard limit
// unchanged): a write that would reach an offset at or past limit fails with
// EFBIG, whoever the process runs as. RLIM_INFINITY lifts it. Lowering the
// soft limit of one's own child needs no privilege.
func setFileSizeLimit(t *testing.T, pid int, limit uint64) {
	t.Helper()
	// The syscall package has no exported prlimit, and x/sys is not a
	// direct dependency: the system call itself takes the limits' addresses.
	var old syscall.Rlimit
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE,
		0, uintptr(unsafe.Pointer(&old)), 0, 0); errno != 0 { //nolint:gosec // G103: prlimit(2) takes a pointer
		t.Fatalf("reading the file size limit of pid %d: %v", pid, errno)
	}
	lim := syscall.Rlimit{Cur: limit, Max: old.Max}
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE,
		uintptr(unsafe.Pointer(&lim)), 0, 0, 0); errno != 0 { //nolint:gosec // G103: prlimit(2) takes a pointer
		t.Fatalf("setting the file size limit of pid %d to %d: %v", pid, limit, errno)
	}
}

// rlimInfinity is RLIM_INFINITY on Linux.
const rlimInfinity = ^uint64(0)

// outcome is the answer to one webhook, or the error that stopped it.
type outcome struct {
	id         string
	status     int
	retryAfter string
	body       string
	err        error
}

// poster sends signed webhooks from several goroutines, so it reports
// failures as values instead of failing the test.
type poster struct {
	base   string
	secret string
	client *http.Client
	text   string // every message carries it, so that the disk fills fast
}

func newPoster(d *daemon, secret string, textLen int) *poster {
	return &poster{
		base:   d.base,
		secret: secret,
		client: &http.Client{Timeout: 30 * time.Second},
		text:   string(bytes.Repeat([]byte("fault-text "), textLen/len("fault-text ")+1)[:textLen]),
	}
}

// send posts the message id and returns the answer.
func (p *poster) send(id string) outcome {
	body := fmt.Appendf(nil, `{"message_id":%q,"from":"+12025550123","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":%q}`, id, p.text)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/webhook", bytes.NewReader(body))
	if err != nil {
		return outcome{id: id, err: err}
	}
	req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(p.secret), body))
	resp, err := p.client.Do(req)
	if err != nil {
		return outcome{id: id, err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{id: id, status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b), err: err}
}

// sendUntilRefused sends new messages named prefix-wW-NNNNNN from workers
// goroutines until one is answered other than 200, or limit have been
// sent. It returns every answer, in no particular order.
func (p *poster) sendUntilRefused(prefix string, workers, limit int) []outcome {
	var (
		mu      sync.Mutex
		out     []outcome
		sent    atomic.Int64
		refused atomic.Bool
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !refused.Load() && sent.Add(1) <= int64(limit); i++ {
				o := p.send(fmt.Sprintf("%s-w%d-%06d", prefix, w, i))
				if o.err != nil || o.status != http.StatusOK {
					refused.Store(true)
				}
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// sendUntilSteadilyRefused sends new messages named prefix-NNNNNN one at a
// time until they are steadily refused: steady in a row, over at least
// settle, so that whatever the store had in flight at the first refusal (a
// checkpoint finishing, say) has ended. It stops after limit messages, and
// returns the answers in order.
func (p *poster) sendUntilSteadilyRefused(prefix string, limit, steady int, settle time.Duration) []outcome {
	var out []outcome
	var since time.Time
	for inARow := 0; len(out) < limit; {
		o := p.send(fmt.Sprintf("%s-%06d", prefix, len(out)))
		out = append(out, o)
		if o.err == nil && o.status == http.StatusOK {
			inARow = 0
			continue
		}
		if inARow == 0 {
			since = time.Now()
		}
		inARow++
		if inARow >= steady && time.Since(since) >= settle {
			break
		}
		time.Sleep(settle / time.Duration(steady))
	}
	return out
}

// waitForStatus polls GET path until it answers want, failing the test
// after timeout.
func waitForStatus(t *testing.T, d *daemon, path string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := d.get(t, path, "")
		if r.status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s still answers %d %s after %s, want %d", path, r.status, r.body, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sizeOf returns the size of path, 0 when it does not exist.
func sizeOf(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
