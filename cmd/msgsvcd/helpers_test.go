package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/buildtest"
	"github.com/msgsvc/msgsvc/internal/pgtest"
	_ "modernc.org/sqlite" // to read the databases the daemon leaves
)

// TestMain removes the daemon binary that the end-to-end tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// daemonBinary builds the real msgsvcd once per test run and returns its
// path (with the race detector under -race, see buildtest.Build).
func daemonBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "msgsvcd-e2e-")
		if buildErr != nil {
			return
		}
		binPath, buildErr = buildtest.Build(binDir, ".", "msgsvcd")
	})
	if buildErr != nil {
		tb.Fatalf("building the daemon: %v", buildErr)
	}
	return binPath
}

// logLines collects what a daemon writes on stdout, line by line. It is safe
// for concurrent writes, so run() can log into it directly too.
type logLines struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced whenever a line arrives
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// all returns the complete lines so far.
func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// text returns everything written so far, partial line included.
func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n") + "\n" + string(l.partial)
}

// wait returns the first line, decoded as a JSON object, for which match
// reports true, waiting up to timeout for it to be written.
func (l *logLines) wait(tb testing.TB, timeout time.Duration, what string, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		lines, changed := l.lines, l.changed
		l.mu.Unlock()
		for _, line := range lines {
			var obj map[string]any
			if json.Unmarshal([]byte(line), &obj) == nil && match(obj) {
				return obj
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("no log line %s within %s; stdout so far:\n%s", what, timeout, l.text())
			return nil
		}
	}
}

// requestLines returns the decoded request lines whose request_id is id.
func (l *logLines) requestLines(tb testing.TB, id string) []map[string]any {
	tb.Helper()
	var found []map[string]any
	for _, line := range l.all() {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			tb.Fatalf("stdout line is not JSON: %v: %q", err, line)
		}
		if obj["request_id"] == id {
			found = append(found, obj)
		}
	}
	return found
}

// daemon is a msgsvcd process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	dir    string // working directory
	base   string // "http://127.0.0.1:port"
	addr   string
	stdout *logLines
	stderr *syncBuffer
	exited chan struct{}
	err    error // from Wait, valid once exited is closed
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// baseEnv is the environment every daemon gets before the test's own
// variables: nothing of the developer's environment leaks into the daemon's
// configuration.
func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if v, ok := os.LookupEnv("GORACE"); ok {
		env = append(env, "GORACE="+v)
	}
	return env
}

// launch starts the daemon binary in dir with env added to baseEnv, without
// waiting for it to serve.
func launch(tb testing.TB, dir string, env map[string]string, args ...string) *daemon {
	tb.Helper()
	d := &daemon{dir: dir, stdout: newLogLines(), stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(daemonBinary(tb), args...)
	d.cmd.Dir = dir
	d.cmd.Env = baseEnv()
	for k, v := range env {
		d.cmd.Env = append(d.cmd.Env, k+"="+v)
	}
	d.cmd.Stdout = d.stdout
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		tb.Fatalf("starting the daemon: %v", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

// startDaemon starts the daemon and waits until it serves. Without ADDR in
// env it listens on 127.0.0.1:0 and the address comes from its "listening"
// log line; with ADDR it polls /health/live there (for log levels that hide
// the listening line). Without DATABASE_URL it gets a fresh database (see
// databaseURL).
func startDaemon(tb testing.TB, env map[string]string) *daemon {
	tb.Helper()
	dir := tb.TempDir()
	env = cloneEnv(env)
	if _, ok := env["DATABASE_URL"]; !ok {
		env["DATABASE_URL"] = databaseURL(tb, filepath.Join(dir, "msgs.db"))
	}
	addr, fixed := env["ADDR"]
	if !fixed {
		env["ADDR"] = "127.0.0.1:0"
	}
	d := launch(tb, dir, env)
	if fixed {
		d.addr = addr
		d.base = "http://" + addr
		d.waitLive(tb, 10*time.Second)
		return d
	}
	done := make(chan map[string]any, 1)
	go func() {
		// wait calls Fatalf only from the test goroutine, so poll here instead.
		for {
			for _, line := range d.stdout.all() {
				var obj map[string]any
				if json.Unmarshal([]byte(line), &obj) == nil && obj["msg"] == "listening" {
					done <- obj
					return
				}
			}
			select {
			case <-d.exited:
				done <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	select {
	case obj := <-done:
		if obj == nil {
			tb.Fatalf("daemon exited before listening: %v\nstdout:\n%s\nstderr:\n%s", d.err, d.stdout.text(), d.stderr.String())
		}
		d.addr, _ = obj["addr"].(string)
	case <-time.After(15 * time.Second):
		tb.Fatalf("daemon did not log a listening line; stdout:\n%s\nstderr:\n%s", d.stdout.text(), d.stderr.String())
	}
	d.base = "http://" + d.addr
	return d
}

func cloneEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(env)+2)
	for k, v := range env {
		out[k] = v
	}
	return out
}

func sqliteURL(absPath string) string { return "sqlite:///" + absPath } // "sqlite:////abs/path"

// databaseURL returns the URL of a fresh database: the SQLite file at
// absPath, or in the Postgres run (see TestDaemonPostgres) a Postgres schema
// of the test's own.
func databaseURL(tb testing.TB, absPath string) string {
	tb.Helper()
	if pgtest.Postgres() {
		return pgtest.URL(tb)
	}
	return sqliteURL(absPath)
}

// waitLive polls GET /health/live until it answers 200.
func (d *daemon) waitLive(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			tb.Fatalf("daemon exited: %v\nstderr:\n%s", d.err, d.stderr.String())
		default:
		}
		resp, err := http.Get(d.base + "/health/live")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("daemon not live at %s within %s", d.base, timeout)
}

// stop sends sig and returns the exit code, failing the test if the daemon
// does not exit within timeout.
func (d *daemon) stop(tb testing.TB, sig syscall.Signal, timeout time.Duration) int {
	tb.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signalling the daemon: %v", err)
	}
	return d.waitExit(tb, timeout)
}

// waitExit waits for the daemon to exit and returns its exit code.
func (d *daemon) waitExit(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		tb.Fatalf("daemon still running after %s; stdout:\n%s", timeout, d.stdout.text())
	}
	var ee *exec.ExitError
	switch {
	case d.err == nil:
		return 0
	case errors.As(d.err, &ee):
		return ee.ExitCode()
	}
	tb.Fatalf("waiting for the daemon: %v", d.err)
	return -1
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(tb testing.TB) map[string]any {
	tb.Helper()
	var obj map[string]any
	if err := json.Unmarshal(r.body, &obj); err != nil {
		tb.Fatalf("response body is not a JSON object: %v: %s", err, r.body)
	}
	return obj
}

var requestSeq struct {
	sync.Mutex
	n int
}

// newRequestID returns a request id unique within the test binary, so a test
// can find its request's log line.
func newRequestID(prefix string) string {
	requestSeq.Lock()
	defer requestSeq.Unlock()
	requestSeq.n++
	return prefix + "-" + strconv.Itoa(requestSeq.n)
}

// do sends one request with X-Request-ID set to id (when not empty) and
// returns the answer.
func do(tb testing.TB, method, url string, body []byte, header http.Header) response {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		tb.Fatalf("building %s %s: %v", method, url, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// get sends GET path with the given request id.
func (d *daemon) get(tb testing.TB, path, requestID string) response {
	tb.Helper()
	h := http.Header{}
	if requestID != "" {
		h.Set("X-Request-ID", requestID)
	}
	return do(tb, http.MethodGet, d.base+path, nil, h)
}

// postSigned sends body to /webhook signed with secret in X-Signature.
func (d *daemon) postSigned(tb testing.TB, secret string, body []byte, requestID string) response {
	tb.Helper()
	h := http.Header{}
	h.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(secret), body))
	if requestID != "" {
		h.Set("X-Request-ID", requestID)
	}
	return do(tb, http.MethodPost, d.base+"/webhook", body, h)
}

// messageBody returns a webhook payload; a nil text is omitted.
func messageBody(tb testing.TB, id, from, to, ts string, text *string) []byte {
	tb.Helper()
	m := map[string]any{"message_id": id, "from": from, "to": to, "ts": ts}
	if text != nil {
		m["text"] = *text
	}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func ptr(s string) *string { return &s }

// metric returns the value of the sample of name whose labels include want,
// from a Prometheus text exposition; ok is false when there is none.
func metric(text, name string, want map[string]string) (value float64, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			for _, pair := range splitLabels(rest[1:end]) {
				k, v, _ := strings.Cut(pair, "=")
				labels[k] = strings.Trim(v, `"`)
			}
			rest = rest[end+1:]
		}
		if !strings.HasPrefix(rest, " ") {
			continue // a longer metric name
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			continue
		}
		return f, true
	}
	return 0, false
}

// splitLabels splits `a="x",b="y"`; label values here never hold commas.
func splitLabels(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// decodeLine decodes a log line; it returns nil for anything not a JSON object.
func decodeLine(line string) map[string]any {
	var obj map[string]any
	if json.Unmarshal([]byte(line), &obj) != nil {
		return nil
	}
	return obj
}

// listAll walks d's /messages with cursors and returns every row's text by
// id, failing on an id listed twice.
func listAll(t *testing.T, d *daemon) map[string]string {
	t.Helper()
	stored := map[string]string{}
	path := "/messages?limit=100"
	for {
		r := d.get(t, path, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		page := r.json(t)
		for _, m := range page["data"].([]any) {
			m := m.(map[string]any)
			id := m["message_id"].(string)
			if _, dup := stored[id]; dup {
				t.Errorf("%s listed twice", id)
			}
			stored[id], _ = m["text"].(string)
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			return stored
		}
		path = "/messages?limit=100&cursor=" + url.QueryEscape(next)
	}
}

// storedIDsIntact opens the database file read-only after the daemon has
// stopped, checks its integrity and that the counters agree with the rows,
// and returns the stored message ids.
func storedIDsIntact(t *testing.T, path string) map[string]bool {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database file: %v", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q, %v", check, err)
	}
	ids := map[string]bool{}
	rows, err := db.Query(`SELECT message_id FROM messages`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	var total int64
	if err := db.QueryRow(`SELECT messages FROM totals WHERE id = 1`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != int64(len(ids)) {
		t.Errorf("totals.messages = %d, but %d rows: the counters disagree with the rows", total, len(ids))
	}
	return ids
}
