//go:build linux

package main

// Store faults, real ones: the daemon binary runs on a SQLite file that the
// test makes unwritable underneath it, then writable again, while it serves.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc/internal/tmpfs"
)

const faultSecret = "fault-secret"

// faultRun is one daemon under a fault.
type faultRun struct {
	dir    string // the tmpfs the database lives on
	dbPath string
	d      *daemon
	p      *poster
}

// storeFault makes the daemon's database unwritable (inject) and writable
// again (clear).
type storeFault struct {
	name string
	// tmpfsSize is the size of the tmpfs the database starts on; empty for
	// a plain temporary folder (the fault then needs no privilege).
	tmpfsSize string
	inject    func(t *testing.T, r *faultRun)
	clear     func(t *testing.T, r *faultRun)
	// maxToFault is how many messages may be stored after inject before
	// the writes fail.
	maxToFault int
	// senders is how many goroutines send at the fault. One sends until
	// messages are steadily refused; several send until one is, and put
	// several requests in the batch that fails: the fault must then refuse
	// every one of them.
	senders int
	// wantError is part of the error the "store unavailable" line names.
	wantError string
}

// TestDaemonFaultStoreUnwritable runs the real daemon on a database that
// becomes unwritable while it serves, and checks that
//   - no webhook is acknowledged unless its message is stored: every write
//     after the fault answers 503 with Retry-After, and the sender can retry;
//   - /health/ready answers 503 during the fault;
//   - once the fault clears, the daemon recovers by itself, without a
//     restart: ready 200 and webhooks 200 again, the refused ones included;
//   - the logs tell the outage once: one "store unavailable" line naming the
//     error and one "store recovered" line, beside one request line each;
//   - the checkpointer goes on after the fault;
//   - after a clean stop, every acknowledged message is in the file, nothing
//     else is, the counters agree and PRAGMA integrity_check is ok.
//
// The faults:
//   - disk full: the database sits on a 2 MiB tmpfs and the test writes
//     until SQLite reports SQLITE_FULL; growing the tmpfs (remount) clears
//     it. The WAL holds most of the disk by then; a checkpoint that must grow
//     the database file fails like a commit, so the WAL cannot start over and
//     the disk stays full until the fault clears.
//   - write limit: the daemon's RLIMIT_FSIZE is lowered to 1 byte with
//     prlimit(2), so every write(2) to a regular file fails with EFBIG
//     (SQLITE_IOERR), root included; raising it clears it. It needs no
//     privilege. (A read-only remount cannot be had while the daemon holds
//     the files open for writing: the kernel answers EBUSY, on a bind mount
//     too; chattr +i does not stop writes through open descriptors.)
func TestDaemonFaultStoreUnwritable(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts file systems and fills them")
	}
	faults := []storeFault{
		{
			name:       "disk full",
			tmpfsSize:  "2m",
			inject:     func(*testing.T, *faultRun) {}, // the writes fill it
			clear:      func(t *testing.T, r *faultRun) { tmpfs.Resize(t, r.dir, "64m") },
			maxToFault: 10000,
			// One sender, and messages of one size: once one finds no
			// room, the next find none either. With batches of different
			// sizes, a small one can fit in the room a larger one failed
			// to fill, and writes fail and succeed in turn for a moment.
			senders:   1,
			wantError: "full",
		},
		{
			name:       "write limit",
			inject:     func(t *testing.T, r *faultRun) { setFileSizeLimit(t, r.d.cmd.Process.Pid, 1) },
			clear:      func(t *testing.T, r *faultRun) { setFileSizeLimit(t, r.d.cmd.Process.Pid, rlimInfinity) },
			maxToFault: 0,
			senders:    4,
			wantError:  "I/O error",
		},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			runStoreFault(t, f)
		})
	}
}

func runStoreFault(t *testing.T, f storeFault) {
	r := &faultRun{}
	if f.tmpfsSize != "" {
		r.dir = tmpfs.Mount(t, f.tmpfsSize)
	} else {
		r.dir = t.TempDir()
	}
	r.dbPath = filepath.Join(r.dir, "app.db")
	r.d = startDaemon(t, map[string]string{"WEBHOOK_SECRET": faultSecret, "DATABASE_URL": sqliteURL(r.dbPath)})
	// 3000 characters make a row of about 6 KB, well past the 4 KB page:
	// every message takes the same pages, whatever the length of its id.
	r.p = newPoster(r.d, faultSecret, 3000)

	var (
		acked, refused []string
		// failed records, in the order the daemon answered them, whether
		// each request that used the store found it failing: the handler
		// logs the passages between the two.
		failed []bool
	)
	ack := func(phase string, outs []outcome, mayRefuse bool) {
		t.Helper()
		for _, o := range outs {
			switch {
			case o.err != nil:
				t.Fatalf("%s: webhook %s: %v", phase, o.id, o.err)
			case o.status == http.StatusOK:
				acked = append(acked, o.id)
			case o.status == http.StatusServiceUnavailable && mayRefuse:
				if o.retryAfter == "" || o.body != `{"detail":"store unavailable"}` {
					t.Errorf("%s: webhook %s refused with Retry-After %q, body %s; want a Retry-After and store unavailable", phase, o.id, o.retryAfter, o.body)
				}
				refused = append(refused, o.id)
			default:
				t.Fatalf("%s: webhook %s answered %d %s", phase, o.id, o.status, o.body)
			}
			failed = append(failed, o.status != http.StatusOK)
		}
	}
	ready := func() int {
		t.Helper()
		status := r.d.get(t, "/health/ready", "").status
		failed = append(failed, status != http.StatusOK)
		return status
	}

	// The daemon works.
	ack("before the fault", r.p.sendUntilRefused("before", 1, 20), false)
	if got := ready(); got != http.StatusOK {
		t.Fatalf("/health/ready = %d before the fault", got)
	}

	// The fault.
	f.inject(t, r)
	var outs []outcome
	if f.senders == 1 {
		// At the edge a checkpoint may still be running; if it completes,
		// the WAL starts over and the next commits fit again.
		outs = r.p.sendUntilSteadilyRefused("fault", f.maxToFault+3, 3, 300*time.Millisecond)
	} else {
		outs = r.p.sendUntilRefused("fault", f.senders, f.maxToFault+f.senders)
	}
	nAcked := len(acked)
	ack("at the fault", outs, true)
	switch {
	case len(refused) == 0:
		t.Fatalf("%d messages after the fault all acknowledged: no write failed", len(outs))
	case f.senders > 1 && len(acked) > nAcked:
		// The order of the answers is unknown; this fault refuses all.
		t.Fatalf("%d acknowledged among %d concurrent requests after the fault", len(acked)-nAcked, len(outs))
	}
	dbAtFault := sizeOf(r.dbPath)
	t.Logf("acknowledged %d, then refused %d of the last %d; database %d B, WAL %d B",
		len(acked), len(refused), len(outs), dbAtFault, sizeOf(r.dbPath+"-wal"))

	// During the fault: every new message is refused, and the daemon is not
	// ready; it stays live.
	during := make([]outcome, 0, 10)
	for i := range cap(during) {
		if i%3 == 0 {
			if got := ready(); got != http.StatusServiceUnavailable {
				t.Errorf("/health/ready = %d during the fault, want 503", got)
			}
		}
		during = append(during, r.p.send(fmt.Sprintf("during-%06d", i)))
	}
	nAcked = len(acked)
	ack("during the fault", during, true)
	if n := len(acked) - nAcked; n > 0 {
		t.Fatalf("during the fault %d of %d new messages were acknowledged", n, len(during))
	}
	if got := r.d.get(t, "/health/live", "").status; got != http.StatusOK {
		t.Errorf("/health/live = %d during the fault", got)
	}

	// The fault clears: the daemon recovers by itself.
	f.clear(t, r)
	for deadline := time.Now().Add(15 * time.Second); ready() != http.StatusOK; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("/health/ready still 503 15s after the fault cleared")
		}
	}
	retried := make([]outcome, 0, len(refused))
	for _, id := range refused {
		retried = append(retried, r.p.send(id))
	}
	ack("retrying after the fault", retried, false)
	ack("after the fault", r.p.sendUntilSteadilyRefused("after", 20, 1, 0), false)
	// The checkpointer got past the failure too: it copies the WAL, which
	// holds every commit since the fault, into the database file.
	for deadline := time.Now().Add(15 * time.Second); sizeOf(r.dbPath) <= dbAtFault; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the database file is still %d B, as at the fault: no checkpoint since", dbAtFault)
		}
	}

	checkOutageLogged(t, r.d, failed, len(refused), f.wantError)

	// A clean stop checkpoints the WAL into the file and removes it.
	if code := r.d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after the fault; stdout:\n%s", code, r.d.stdout.text())
	}
	checkOnlyDatabaseLeft(t, r.dir)
	stored := storedIDsIntact(t, r.dbPath)
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged %s is not stored", id)
		}
	}
	if len(stored) != len(acked) {
		t.Errorf("%d messages stored, %d acknowledged: a refused message was stored", len(stored), len(acked))
	}
	t.Logf("%d acknowledged (%d retried after %d refusals), %d stored, integrity ok",
		len(acked), len(retried), len(refused), len(stored))
}

// checkOutageLogged checks the daemon's JSON log lines against failed, the
// store's answers in order: one "store unavailable" line naming the error
// where a run of failures starts, one "store recovered" line where it ends
// (one each, for a steady fault), and one request line per refused webhook.
func checkOutageLogged(t *testing.T, d *daemon, failed []bool, refusals int, wantError string) {
	t.Helper()
	var wantDown, wantUp int
	for i, f := range failed {
		switch {
		case f && (i == 0 || !failed[i-1]):
			wantDown++
		case !f && i > 0 && failed[i-1]:
			wantUp++
		}
	}
	if wantDown > 1 {
		t.Logf("the store failed in %d separate runs at the edge of the fault", wantDown)
	}
	// The last line may still be on its way.
	d.stdout.wait(t, 10*time.Second, `"store recovered"`, func(l map[string]any) bool { return l["msg"] == "store recovered" })
	var down, up []int
	refusedLines := 0
	for i, line := range d.stdout.all() {
		l := decodeLine(line)
		if l == nil {
			t.Fatalf("stdout line is not JSON: %q", line)
		}
		switch l["msg"] {
		case "store unavailable":
			down = append(down, i)
			if l["level"] != "ERROR" || !strings.Contains(stringField(l["error"]), wantError) {
				t.Errorf("outage line %s: want level ERROR and an error about %q", line, wantError)
			}
		case "store recovered":
			up = append(up, i)
			if l["level"] != "INFO" {
				t.Errorf("recovery line %s: want level INFO", line)
			}
		case "request":
			if l["path"] == "/webhook" && l["status"] == float64(http.StatusServiceUnavailable) {
				refusedLines++
				if l["result"] != "store_error" || l["level"] != "ERROR" {
					t.Errorf("refused webhook's line %s: want result store_error, level ERROR", line)
				}
			}
		}
	}
	alternating := len(down) == len(up)
	for i := 0; alternating && i < len(down); i++ {
		alternating = down[i] < up[i] && (i == 0 || up[i-1] < down[i])
	}
	if len(down) != wantDown || len(up) != wantUp || !alternating {
		t.Errorf("store unavailable at lines %v, store recovered at lines %v: want %d and %d, alternating; stdout:\n%s",
			down, up, wantDown, wantUp, d.stdout.text())
	}
	if refusedLines != refusals {
		t.Errorf("%d request lines for %d refused webhooks", refusedLines, refusals)
	}
	m := string(d.get(t, "/metrics", "").body)
	if v, _ := metric(m, "webhook_requests_total", map[string]string{"result": "store_error"}); v != float64(refusals) {
		t.Errorf(`webhook_requests_total{result="store_error"} = %v, want %d`, v, refusals)
	}
}

// checkOnlyDatabaseLeft checks that a clean stop left the database file
// alone in dir: the WAL checkpointed and removed, no file of the store's
// room check left behind.
func checkOnlyDatabaseLeft(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "app.db" && e.Name() != "app.db-index" { // the search index, without its WAL
			info, _ := e.Info()
			t.Errorf("%s (%v) left beside the database after a clean stop", e.Name(), info.Size())
		}
	}
}

func stringField(v any) string {
	s, _ := v.(string)
	return s
}

// TestDaemonFaultStopWhileDiskFull stops the daemon while its disk is full:
// it must still exit cleanly (the store's last checkpoint fails, and the WAL
// keeps what it could not copy), and a daemon started on the same file once
// there is room again must serve every acknowledged message.
func TestDaemonFaultStopWhileDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts file systems and fills them")
	}
	t.Parallel()
	dir := tmpfs.Mount(t, "2m")
	dbPath := filepath.Join(dir, "app.db")
	env := map[string]string{"WEBHOOK_SECRET": faultSecret, "DATABASE_URL": sqliteURL(dbPath)}
	d := startDaemon(t, env)
	var acked []string
	refused := 0
	for _, o := range newPoster(d, faultSecret, 3000).sendUntilRefused("full", 1, 10000) {
		switch {
		case o.err == nil && o.status == http.StatusOK:
			acked = append(acked, o.id)
		case o.err == nil && o.status == http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("webhook %s: %d %s %v", o.id, o.status, o.body, o.err)
		}
	}
	if refused == 0 {
		t.Fatalf("no write failed after %d messages", len(acked))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d on a full disk; stdout:\n%s\nstderr:\n%s", code, d.stdout.text(), d.stderr.String())
	}
	t.Logf("stopped on a full disk after %d acknowledged; database %d B, WAL %d B",
		len(acked), sizeOf(dbPath), sizeOf(dbPath+"-wal"))

	tmpfs.Resize(t, dir, "64m")
	d = startDaemon(t, env)
	waitForStatus(t, d, "/health/ready", http.StatusOK, 10*time.Second)
	if total := d.get(t, "/stats", "").json(t)["total_messages"]; total != float64(len(acked)) {
		t.Errorf("/stats total_messages = %v after the restart, want the %d acknowledged", total, len(acked))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after the restart", code)
	}
	stored := storedIDsIntact(t, dbPath)
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged %s is not stored", id)
		}
	}
	if len(stored) != len(acked) {
		t.Errorf("%d stored, %d acknowledged", len(stored), len(acked))
	}
}
