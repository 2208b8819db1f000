package main

// End-to-end tests: they build the real msgsvcd binary, run it on
// 127.0.0.1:0 with a SQLite file in a temporary folder, and talk HTTP to it.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

const (
	e2eSecret = "e2e-secret-Zq9wX" // must never appear in the logs
	e2eToken  = "verify-tok-7Hn"
)

func TestDaemonEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{
		"WEBHOOK_SECRET":        e2eSecret,
		"WHATSAPP_VERIFY_TOKEN": e2eToken,
	})
	const (
		alice = "+919876543210"
		bob   = "+14155550100"
		carol = "+447700900123"
	)
	secretText := "Hello from Alice, secret-text-Kp3"

	// sent records each request's id and what its log line must say.
	type sent struct {
		id, method, path string
		status           int
		result, msgID    string
		dup              bool
		level            string
	}
	var log []sent

	post := func(id string, body []byte) response {
		t.Helper()
		return d.postSigned(t, e2eSecret, body, id)
	}

	// A first delivery is created, a second with the same id is a duplicate
	// and changes nothing (first write wins).
	m1 := messageBody(t, "m1", alice, bob, "2025-01-15T10:00:00Z", &secretText)
	if r := post("req-m1", m1); r.status != 200 || string(r.body) != `{"status":"ok"}` {
		t.Fatalf("POST m1 = %d %s", r.status, r.body)
	} else if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	} else if got := r.header.Get("X-Request-ID"); got != "req-m1" {
		t.Errorf("X-Request-ID echoed as %q", got)
	}
	log = append(log, sent{"req-m1", "POST", "/webhook", 200, "created", "m1", false, "INFO"})

	dupBody := messageBody(t, "m1", alice, bob, "2025-01-15T11:00:00Z", ptr("changed, secret-text-Kp3"))
	if r := post("req-m1-dup", dupBody); r.status != 200 || string(r.body) != `{"status":"ok"}` {
		t.Fatalf("POST duplicate m1 = %d %s", r.status, r.body)
	}
	log = append(log, sent{"req-m1-dup", "POST", "/webhook", 200, "duplicate", "m1", true, "INFO"})

	m2 := messageBody(t, "m2", bob, alice, "2025-01-15T10:00:00.5Z", ptr("école starts, secret-text-Kp3"))
	if r := post("req-m2", m2); r.status != 200 {
		t.Fatalf("POST m2 = %d %s", r.status, r.body)
	}
	log = append(log, sent{"req-m2", "POST", "/webhook", 200, "created", "m2", false, "INFO"})

	m3 := messageBody(t, "m3", alice, carol, "2025-01-16T09:00:00Z", nil)
	if r := post("req-m3", m3); r.status != 200 {
		t.Fatalf("POST m3 = %d %s", r.status, r.body)
	}
	log = append(log, sent{"req-m3", "POST", "/webhook", 200, "created", "m3", false, "INFO"})

	// X-Hub-Signature-256, prefix and hex in upper case.
	m4 := messageBody(t, "m4", carol, bob, "2025-01-14T08:00:00Z", ptr("early, secret-text-Kp3"))
	hub := http.Header{}
	hub.Set(msgsvc.HubSignatureHeader, "SHA256="+strings.ToUpper(msgsvc.Sign([]byte(e2eSecret), m4)))
	hub.Set("X-Request-ID", "req-m4")
	if r := do(t, "POST", d.base+"/webhook", m4, hub); r.status != 200 {
		t.Fatalf("POST m4 with X-Hub-Signature-256 = %d %s", r.status, r.body)
	}
	log = append(log, sent{"req-m4", "POST", "/webhook", 200, "created", "m4", false, "INFO"})

	// A wrong signature is refused, and nothing is stored.
	bad := http.Header{}
	bad.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte("not-the-secret"), m4))
	bad.Set("X-Request-ID", "req-badsig")
	if r := do(t, "POST", d.base+"/webhook", messageBody(t, "m5", alice, bob, "2025-01-15T10:00:00Z", nil), bad); r.status != 401 || string(r.body) != `{"detail":"invalid signature"}` {
		t.Fatalf("POST with a wrong signature = %d %s", r.status, r.body)
	}
	log = append(log, sent{"req-badsig", "POST", "/webhook", 401, "invalid_signature", "", false, "ERROR"})

	// An invalid payload lists every failing field and echoes no input.
	invalid := []byte(`{"message_id":"","from":"919876543210","to":"+14155550100","ts":"2025-02-30T00:00:00Z","text":"secret-text-Kp3"}`)
	r := post("req-invalid", invalid)
	if r.status != 422 {
		t.Fatalf("POST invalid = %d %s", r.status, r.body)
	}
	var locs []string
	for _, item := range r.json(t)["detail"].([]any) {
		e := item.(map[string]any)
		if _, echoed := e["input"]; echoed {
			t.Errorf("422 item echoes its input: %v", e)
		}
		locs = append(locs, fmt.Sprint(e["loc"]))
	}
	if got, want := strings.Join(locs, " "), "[body message_id] [body from] [body ts]"; got != want {
		t.Errorf("422 locs = %s, want %s", got, want)
	}
	log = append(log, sent{"req-invalid", "POST", "/webhook", 422, "validation_error", "", false, "WARN"})

	// GET /messages: a raw '+' in from, q folded, since with a raw '+' offset.
	list := func(id, query string) map[string]any {
		t.Helper()
		r := d.get(t, "/messages"+query, id)
		if r.status != 200 {
			t.Fatalf("GET /messages%s = %d %s", query, r.status, r.body)
		}
		log = append(log, sent{id: id, method: "GET", path: "/messages", status: 200, level: "INFO"})
		return r.json(t)
	}
	ids := func(page map[string]any) string {
		var s []string
		for _, m := range page["data"].([]any) {
			s = append(s, m.(map[string]any)["message_id"].(string))
		}
		return strings.Join(s, ",")
	}
	page := list("req-list-all", "")
	if got := ids(page); got != "m4,m1,m2,m3" {
		t.Errorf("list order = %s, want m4,m1,m2,m3", got)
	}
	if page["total"] != 4.0 || page["limit"] != 50.0 || page["offset"] != 0.0 || page["next_cursor"] != nil {
		t.Errorf("list page = %v", page)
	}
	first := page["data"].([]any)[1].(map[string]any)
	if first["text"] != secretText || first["ts"] != "2025-01-15T10:00:00Z" || first["from"] != alice || first["to"] != bob {
		t.Errorf("m1 = %v, want the first delivery unchanged", first)
	}
	if third := page["data"].([]any)[3].(map[string]any); third["text"] != nil {
		t.Errorf("m3 text = %v, want null", third["text"])
	}

	page = list("req-list-from", "?from="+alice) // sent as a raw '+'
	if got := ids(page); got != "m1,m3" || page["total"] != 2.0 {
		t.Errorf("from=%s: %s total %v, want m1,m3 total 2", alice, got, page["total"])
	}
	page = list("req-list-from-encoded", "?from="+url.QueryEscape(alice))
	if got := ids(page); got != "m1,m3" {
		t.Errorf("from=%%2B...: %s, want m1,m3", got)
	}
	page = list("req-list-q", "?q="+url.QueryEscape("ÉCOLE"))
	if got := ids(page); got != "m2" || page["total"] != 1.0 {
		t.Errorf("q=ÉCOLE: %s total %v, want m2 total 1", got, page["total"])
	}
	page = list("req-list-since", "?since=2025-01-16T14:30:00+05:30") // 09:00Z, raw '+'
	if got := ids(page); got != "m3" {
		t.Errorf("since=...+05:30: %s, want m3", got)
	}
	page = list("req-list-since-frac", "?since=2025-01-15T10:00:00.1Z")
	if got := ids(page); got != "m2,m3" {
		t.Errorf("since=10:00:00.1Z: %s, want m2,m3", got)
	}

	// Keyset pages: next_cursor until the last page; total stays exact.
	var walked []string
	query := "?limit=3"
	for i := 0; ; i++ {
		page = list(fmt.Sprintf("req-list-cursor-%d", i), query)
		walked = append(walked, ids(page))
		if page["total"] != 4.0 || page["offset"] != 0.0 {
			t.Errorf("cursor page %d = %v", i, page)
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		query = "?limit=3&cursor=" + url.QueryEscape(next)
	}
	if got := strings.Join(walked, "|"); got != "m4,m1,m2|m3" {
		t.Errorf("cursor walk = %s, want m4,m1,m2|m3", got)
	}
	page = list("req-list-offset", "?limit=2&offset=2")
	if got := ids(page); got != "m2,m3" || page["next_cursor"] != nil || page["offset"] != 2.0 {
		t.Errorf("offset page = %v", page)
	}

	if r := d.get(t, "/messages?limit=0", "req-list-bad"); r.status != 422 ||
		!strings.Contains(string(r.body), `"loc":["query","limit"]`) {
		t.Errorf("limit=0 = %d %s", r.status, r.body)
	}
	log = append(log, sent{id: "req-list-bad", method: "GET", path: "/messages", status: 422, level: "WARN"})

	// GET /stats.
	r = d.get(t, "/stats", "req-stats")
	if r.status != 200 {
		t.Fatalf("GET /stats = %d %s", r.status, r.body)
	}
	log = append(log, sent{id: "req-stats", method: "GET", path: "/stats", status: 200, level: "INFO"})
	wantStats := `{"total_messages":4,"senders_count":3,"messages_per_sender":[` +
		`{"from":"+919876543210","count":2},{"from":"+14155550100","count":1},{"from":"+447700900123","count":1}],` +
		`"first_message_ts":"2025-01-14T08:00:00Z","last_message_ts":"2025-01-16T09:00:00Z"}`
	if string(r.body) != wantStats {
		t.Errorf("GET /stats = %s\nwant %s", r.body, wantStats)
	}

	// Probes, HEAD, routing.
	for _, p := range []string{"/health/live", "/health/ready"} {
		id := "req-probe" + strings.ReplaceAll(p, "/", "-")
		if r := d.get(t, p, id); r.status != 200 || string(r.body) != `{"status":"ok"}` {
			t.Errorf("GET %s = %d %s", p, r.status, r.body)
		}
		log = append(log, sent{id: id, method: "GET", path: p, status: 200, level: "INFO"})
	}
	if r := do(t, "HEAD", d.base+"/stats", nil, http.Header{"X-Request-Id": {"req-head"}}); r.status != 200 || len(r.body) != 0 {
		t.Errorf("HEAD /stats = %d %q", r.status, r.body)
	}
	log = append(log, sent{id: "req-head", method: "HEAD", path: "/stats", status: 200, level: "INFO"})

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		method, path string
		status       int
		body, allow  string
	}{
		{"GET", "/messages/", 404, `{"detail":"Not Found"}`, ""},
		{"GET", "/nope", 404, `{"detail":"Not Found"}`, ""},
		{"POST", "//webhook", 404, `{"detail":"Not Found"}`, ""},
		{"GET", "/stats/../stats", 404, `{"detail":"Not Found"}`, ""},
		{"DELETE", "/messages", 405, `{"detail":"Method Not Allowed"}`, "GET, HEAD"},
		{"PUT", "/webhook", 405, `{"detail":"Method Not Allowed"}`, "GET, POST"}, // GET only for the handshake
	} {
		id := newRequestID("req-route")
		req, err := http.NewRequest(tc.method, d.base+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Path = tc.path // sent exactly as written, uncleaned
		req.Header.Set("X-Request-ID", id)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || b.String() != tc.body || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d %s Allow %q, want %d %s Allow %q", tc.method, tc.path,
				resp.StatusCode, b.String(), resp.Header.Get("Allow"), tc.status, tc.body, tc.allow)
		}
		log = append(log, sent{id: id, method: tc.method, path: tc.path, status: tc.status, level: "WARN"})
	}

	// WhatsApp verification handshake.
	if r := d.get(t, "/webhook?hub.mode=subscribe&hub.verify_token="+e2eToken+"&hub.challenge=ch-123", "req-verify"); r.status != 200 ||
		string(r.body) != "ch-123" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /webhook handshake = %d %q %s", r.status, r.body, r.header.Get("Content-Type"))
	}
	log = append(log, sent{id: "req-verify", method: "GET", path: "/webhook", status: 200, level: "INFO"})
	if r := d.get(t, "/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=ch-123", "req-verify-bad"); r.status != 403 {
		t.Errorf("GET /webhook with a wrong token = %d %s", r.status, r.body)
	}
	log = append(log, sent{id: "req-verify-bad", method: "GET", path: "/webhook", status: 403, level: "WARN"})

	// Metrics, scraped last so that they count everything above.
	r = d.get(t, "/metrics", "req-metrics")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s", r.status, r.header.Get("Content-Type"))
	}
	text := string(r.body)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"webhook_requests_total", map[string]string{"result": "created"}, 4},
		{"webhook_requests_total", map[string]string{"result": "duplicate"}, 1},
		{"webhook_requests_total", map[string]string{"result": "invalid_signature"}, 1},
		{"webhook_requests_total", map[string]string{"result": "validation_error"}, 1},
		{"webhook_requests_total", map[string]string{"result": "too_large"}, 0},
		{"webhook_requests_total", map[string]string{"result": "not_configured"}, 0},
		{"webhook_requests_total", map[string]string{"result": "store_error"}, 0},
		{"webhook_requests_total", map[string]string{"result": "ignored"}, 0},
		{"http_requests_total", map[string]string{"path": "/webhook", "status": "200"}, 6}, // 5 posts + handshake
		{"http_requests_total", map[string]string{"path": "/webhook", "status": "401"}, 1},
		{"http_requests_total", map[string]string{"path": "/webhook", "status": "422"}, 1},
		{"http_requests_total", map[string]string{"path": "/stats", "status": "200"}, 2},
		{"http_requests_total", map[string]string{"path": "unmatched", "status": "404"}, 4},
		{"http_requests_total", map[string]string{"path": "unmatched", "status": "405"}, 2},
		{"request_latency_ms_count", map[string]string{"path": "/messages"}, 10},
		// The store's own: the five accepted posts reached it, in batches
		// that held one message each and none failed.
		{"store_insert_seconds_count", nil, 5},
		{"store_batch_messages_sum", nil, 5},
		{"store_failed_batches_total", nil, 0},
	} {
		got, ok := metric(text, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	for _, le := range []string{"100", "500", "1000", "2000", "5000", "+Inf"} {
		if _, ok := metric(text, "request_latency_ms_bucket", map[string]string{"path": "/webhook", "le": le}); !ok {
			t.Errorf("request_latency_ms has no bucket le=%s", le)
		}
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := metric(text, name, nil); !ok {
			t.Errorf("metrics lack %s (the Go and process collectors)", name)
		}
	}
	if strings.Contains(text, "/nope") || strings.Contains(text, "/messages/") {
		t.Error("a raw unmatched path became a metric label")
	}
	log = append(log, sent{id: "req-metrics", method: "GET", path: "/metrics", status: 200, level: "INFO"})

	// Logs: one JSON line per request with the contract's fields.
	last := log[len(log)-1].id
	d.stdout.wait(t, 5*time.Second, "for "+last, func(o map[string]any) bool { return o["request_id"] == last })
	rfc3339 := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)
	for _, s := range log {
		lines := d.stdout.requestLines(t, s.id)
		if len(lines) != 1 {
			t.Errorf("request %s: %d log lines, want 1", s.id, len(lines))
			continue
		}
		l := lines[0]
		ts, _ := l["ts"].(string)
		if !rfc3339.MatchString(ts) {
			t.Errorf("request %s: ts %q is not RFC 3339 UTC", s.id, ts)
		}
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("request %s: ts %q: %v", s.id, ts, err)
		}
		wantPath := s.path
		if s.status == http.StatusNotFound {
			wantPath = "unmatched" // an unknown path is the client's text: never logged
		}
		if l["level"] != s.level || l["method"] != s.method || l["path"] != wantPath || l["status"] != float64(s.status) {
			t.Errorf("request %s: line %v, want level %s method %s path %s status %d", s.id, l, s.level, s.method, s.path, s.status)
		}
		if _, ok := l["latency_ms"].(float64); !ok {
			t.Errorf("request %s: no numeric latency_ms in %v", s.id, l)
		}
		if s.method == "POST" && s.path == "/webhook" {
			if l["result"] != s.result || l["dup"] != s.dup {
				t.Errorf("request %s: result %v dup %v, want %s %v", s.id, l["result"], l["dup"], s.result, s.dup)
			}
			if got, _ := l["message_id"].(string); got != s.msgID {
				t.Errorf("request %s: message_id %q, want %q", s.id, got, s.msgID)
			}
		} else if _, ok := l["result"]; ok {
			t.Errorf("request %s: a non-webhook line carries a result: %v", s.id, l)
		}
	}
	all := d.stdout.text()
	for _, secret := range []string{
		e2eSecret, "secret-text-Kp3", "école", "Hello",
		"9876543210", "4155550100", "7700900123",
		msgsvc.Sign([]byte(e2eSecret), m1), strings.ToUpper(msgsvc.Sign([]byte(e2eSecret), m4)),
	} {
		if strings.Contains(all, secret) {
			t.Errorf("stdout contains %q:\n%s", secret, all)
		}
	}
	for _, line := range d.stdout.all() {
		if decodeLine(line) == nil {
			t.Errorf("stdout line is not a JSON object: %q", line)
		}
	}

	if code := d.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, stderr:\n%s", code, d.stderr.String())
	}
}

func TestDaemonWithoutSecret(t *testing.T) {
	t.Parallel()
	for name, vars := range map[string]map[string]string{
		"unset":         {},
		"empty":         {"WEBHOOK_SECRET": ""},
		"previous only": {"WEBHOOK_SECRET_PREVIOUS": "old-secret"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, vars)
			body := messageBody(t, "n1", "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", nil)
			r := d.postSigned(t, "old-secret", body, "")
			if r.status != 503 || string(r.body) != `{"detail":"webhook secret not configured"}` {
				t.Errorf("POST /webhook = %d %s, want 503", r.status, r.body)
			}
			if r := d.get(t, "/health/ready", ""); r.status != 503 {
				t.Errorf("GET /health/ready = %d %s, want 503", r.status, r.body)
			}
			if r := d.get(t, "/health/live", ""); r.status != 200 {
				t.Errorf("GET /health/live = %d, want 200", r.status)
			}
			// Without WHATSAPP_VERIFY_TOKEN, GET /webhook is a wrong method.
			if r := d.get(t, "/webhook?hub.mode=subscribe&hub.verify_token=&hub.challenge=x", ""); r.status != 405 || r.header.Get("Allow") != "POST" {
				t.Errorf("GET /webhook = %d Allow %q, want 405 Allow POST", r.status, r.header.Get("Allow"))
			}
			m := d.get(t, "/metrics", "")
			if v, _ := metric(string(m.body), "webhook_requests_total", map[string]string{"result": "not_configured"}); v != 1 {
				t.Errorf("webhook_requests_total{result=not_configured} = %v, want 1", v)
			}
			if s := d.get(t, "/stats", ""); !strings.Contains(string(s.body), `"total_messages":0`) {
				t.Errorf("GET /stats = %s, want nothing stored", s.body)
			}
		})
	}
}

func TestDaemonSecretRotation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": "new-secret", "WEBHOOK_SECRET_PREVIOUS": "old-secret"})
	for i, tc := range []struct {
		secret string
		status int
	}{{"new-secret", 200}, {"old-secret", 200}, {"other-secret", 401}} {
		body := messageBody(t, fmt.Sprintf("rot-%d", i), "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", nil)
		if r := d.postSigned(t, tc.secret, body, ""); r.status != tc.status {
			t.Errorf("signed with %s: %d %s, want %d", tc.secret, r.status, r.body, tc.status)
		}
	}
	if r := d.get(t, "/health/ready", ""); r.status != 200 {
		t.Errorf("GET /health/ready = %d, want 200", r.status)
	}
}

func TestDaemonBadConfiguration(t *testing.T) {
	t.Parallel()
	type badCase struct {
		variable, value string
		args            []string
	}
	cases := []badCase{{variable: "arguments", args: []string{"--addr", ":80"}}}
	for _, b := range badConfigs {
		cases = append(cases, badCase{variable: b.variable, value: b.value})
	}
	for _, tc := range cases {
		t.Run(tc.variable+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			vars := map[string]string{
				"WEBHOOK_SECRET": "s",
				"ADDR":           "127.0.0.1:0",
				"DATABASE_URL":   sqliteURL(filepath.Join(dir, "never.db")),
			}
			if tc.args == nil {
				vars[tc.variable] = tc.value
			}
			d := launch(t, dir, vars, tc.args...)
			if code := d.waitExit(t, 15*time.Second); code != 2 {
				t.Errorf("exit status %d, want 2; stderr:\n%s", code, d.stderr.String())
			}
			stderr := d.stderr.String()
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.Contains(stderr, tc.variable) {
				t.Errorf("stderr is not one line naming %s:\n%s", tc.variable, stderr)
			}
			if out := d.stdout.text(); strings.TrimSpace(out) != "" {
				t.Errorf("stdout is not empty: %s", out)
			}
			if _, err := os.Stat(filepath.Join(dir, "never.db")); err == nil {
				t.Error("the database was created despite the bad configuration")
			}
		})
	}
}

func TestDaemonEmptyVariablesAreUnset(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{
		"WEBHOOK_SECRET": "", "WEBHOOK_SECRET_PREVIOUS": "", "DATABASE_URL": "", "LOG_LEVEL": "",
		"WHATSAPP_VERIFY_TOKEN": "", "MAX_BODY_BYTES": "", "SHUTDOWN_TIMEOUT": "",
	})
	// DATABASE_URL's default, sqlite:///data/app.db, is relative to the
	// working directory.
	if _, err := os.Stat(filepath.Join(d.dir, "data", "app.db")); err != nil {
		t.Errorf("default database not created: %v", err)
	}
	// MAX_BODY_BYTES's default is 1 MiB: one byte more is too large, the
	// limit itself passes the size check (and meets the missing secret).
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	if r := do(t, "POST", d.base+"/webhook", big, nil); r.status != 413 || string(r.body) != `{"detail":"request body too large"}` {
		t.Errorf("POST 1 MiB + 1 = %d %s, want 413", r.status, r.body)
	}
	if r := do(t, "POST", d.base+"/webhook", big[:1<<20], nil); r.status != 503 {
		t.Errorf("POST 1 MiB = %d %s, want 503 (no secret)", r.status, r.body)
	}
	if code := d.stop(t, syscall.SIGINT, 15*time.Second); code != 0 {
		t.Errorf("exit status after SIGINT = %d; stderr:\n%s", code, d.stderr.String())
	}
}

func TestDaemonMaxBodyBytes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": e2eSecret, "MAX_BODY_BYTES": "120"})
	small := messageBody(t, "b1", "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", nil)
	if len(small) > 120 {
		t.Fatalf("test body is %d bytes", len(small))
	}
	if r := d.postSigned(t, e2eSecret, small, ""); r.status != 200 {
		t.Errorf("POST %d bytes = %d %s", len(small), r.status, r.body)
	}
	large := messageBody(t, "b2", "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", ptr(strings.Repeat("y", 80)))
	if r := d.postSigned(t, e2eSecret, large, "req-large"); r.status != 413 {
		t.Errorf("POST %d bytes = %d %s, want 413", len(large), r.status, r.body)
	}
	l := d.stdout.wait(t, 5*time.Second, "for req-large", func(o map[string]any) bool { return o["request_id"] == "req-large" })
	if l["result"] != "too_large" || l["level"] != "WARN" {
		t.Errorf("log line %v, want result too_large at WARN", l)
	}
}

func TestDaemonLogLevel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level  string
		logged map[string]bool // request id -> has a line
	}{
		{"debug", map[string]bool{"live": true, "notfound": true, "badsig": true}},
		{"Info", map[string]bool{"live": true, "notfound": true, "badsig": true}},
		{"wArN", map[string]bool{"live": false, "notfound": true, "badsig": true}},
		{"error", map[string]bool{"live": false, "notfound": false, "badsig": true}},
	} {
		t.Run(tc.level, func(t *testing.T) {
			t.Parallel()
			// WARN and ERROR hide the listening line, so the address is fixed.
			d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": e2eSecret, "LOG_LEVEL": tc.level, "ADDR": freeAddr(t)})
			prefix := newRequestID("lvl")
			d.get(t, "/health/live", prefix+"-live")
			d.get(t, "/nope", prefix+"-notfound")
			bad := http.Header{"X-Signature": {strings.Repeat("0", 64)}, "X-Request-Id": {prefix + "-badsig"}}
			do(t, "POST", d.base+"/webhook", []byte(`{}`), bad)
			// The ERROR line comes last; once it is there, the others are too.
			d.stdout.wait(t, 5*time.Second, "for the bad signature", func(o map[string]any) bool { return o["request_id"] == prefix+"-badsig" })
			for name, want := range tc.logged {
				if got := len(d.stdout.requestLines(t, prefix+"-"+name)) == 1; got != want {
					t.Errorf("LOG_LEVEL=%s: request %s logged = %v, want %v", tc.level, name, got, want)
				}
			}
		})
	}
}

// TestDaemonGracefulShutdown sends SIGTERM while requests are in flight: one
// whose body is still arriving, and a stream of concurrent deliveries. The
// in-flight request completes with 200, the daemon exits 0, and after a
// restart on the same database every acknowledged message is there.
func TestDaemonGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbURL := databaseURL(t, filepath.Join(dir, "durable.db"))
	vars := map[string]string{"WEBHOOK_SECRET": e2eSecret, "DATABASE_URL": dbURL, "SHUTDOWN_TIMEOUT": "10s"}
	d := startDaemon(t, vars)

	// A request whose headers are in and whose body is half sent.
	slowBody := messageBody(t, "slow-1", "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", ptr("slow"))
	conn, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhook HTTP/1.1\r\nHost: %s\r\nX-Signature: %s\r\nContent-Length: %d\r\nX-Request-ID: req-slow\r\n\r\n",
		d.addr, msgsvc.Sign([]byte(e2eSecret), slowBody), len(slowBody))
	half := len(slowBody) / 2
	if _, err := conn.Write(slowBody[:half]); err != nil {
		t.Fatal(err)
	}

	// Concurrent senders, each recording the ids acknowledged with 200.
	const senders = 8
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stopSending := make(chan struct{})
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; i < 2000; i++ {
				select {
				case <-stopSending:
					return
				default:
				}
				id := fmt.Sprintf("load-%d-%d", s, i)
				body := fmt.Appendf(nil, `{"message_id":%q,"from":"+15550003333","to":"+15550004444","ts":"2025-01-15T10:00:%02dZ"}`, id, i%60)
				req, _ := http.NewRequest("POST", d.base+"/webhook", bytes.NewReader(body))
				req.Header.Set("X-Signature", msgsvc.Sign([]byte(e2eSecret), body))
				resp, err := client.Do(req)
				if err != nil {
					return // the server has stopped accepting
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				} else if resp.StatusCode != 503 {
					t.Errorf("POST %s = %d", id, resp.StatusCode)
					return
				}
			}
		}()
	}
	// Let the load run, and the slow request's headers reach the server.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.stdout.wait(t, 5*time.Second, `"shutting down"`, func(o map[string]any) bool { return o["msg"] == "shutting down" })
	time.Sleep(100 * time.Millisecond)
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited with a request in flight: %v", d.err)
	default:
	}

	// The in-flight request finishes and is acknowledged.
	if _, err := conn.Write(slowBody[half:]); err != nil {
		t.Fatalf("finishing the in-flight body: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the in-flight answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("in-flight request answered %d, want 200", resp.StatusCode)
	}

	close(stopSending)
	wg.Wait()
	acked = append(acked, "slow-1")
	if code := d.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d; stderr:\n%s", code, d.stderr.String())
	}
	d.stdout.wait(t, time.Second, `"stopped"`, func(o map[string]any) bool { return o["msg"] == "stopped" })
	t.Logf("%d deliveries acknowledged before and during shutdown", len(acked))

	// Restart on the same database: every acknowledged id is there.
	d2 := startDaemon(t, vars)
	stored := map[string]bool{}
	query := "/messages?limit=100"
	for {
		r := d2.get(t, query, "")
		if r.status != 200 {
			t.Fatalf("GET %s = %d %s", query, r.status, r.body)
		}
		page := r.json(t)
		for _, m := range page["data"].([]any) {
			stored[m.(map[string]any)["message_id"].(string)] = true
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		query = "/messages?limit=100&cursor=" + url.QueryEscape(next)
	}
	missing := 0
	for _, id := range acked {
		if !stored[id] {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged message %s is missing after restart", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged messages missing", missing, len(acked))
	}
	if code := d2.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("second daemon exit status = %d", code)
	}
}

// TestDaemonQueryDecisions covers choices the contract leaves open, as the
// README's design notes describe them.
func TestDaemonQueryDecisions(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": e2eSecret})
	for _, id := range []string{"a", "b"} {
		from := map[string]string{"a": "+15550001111", "b": "+15550002222"}[id]
		if r := d.postSigned(t, e2eSecret, messageBody(t, id, from, "+15550009999", "2025-01-15T10:00:00Z", nil), ""); r.status != 200 {
			t.Fatalf("POST %s = %d %s", id, r.status, r.body)
		}
	}
	for _, tc := range []struct {
		query  string
		status int
		want   string // a substring of the body
	}{
		{"?q=%zz", 422, `"loc":["query"]`},
		{"?q=%ff", 422, `"loc":["query","q"]`},
		{"?from=%2B15550001111&from=%2B15550002222", 200, `"total":1,`},       // the last value wins
		{"?from=%2B15550001111&from=%2B15550002222", 200, `"message_id":"b"`}, // ...and it is b's
		{"?since=2025-01-15t10:00:00z", 200, `"total":2,`},                    // lowercase t and z
		{"?since=2025-01-15T10:00:60Z", 422, `"loc":["query","since"]`},       // no leap second
		{"?since=2025-01-15T10:00:00.000000001Z", 200, `"total":0,`},          // nanosecond precision
		{"?limit=", 422, `"loc":["query","limit"]`},                           // empty is not an integer
		{"?cursor=&from=&q=&since=", 200, `"total":2,`},                       // empty means absent
		{"?cursor=bm90LWEtY3Vyc29y", 422, `"loc":["query","cursor"]`},         // malformed
		{"?limit=101", 422, `"type":"less_than_equal"`},
	} {
		r := d.get(t, "/messages"+tc.query, "")
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("GET /messages%s = %d %s, want %d with %s", tc.query, r.status, r.body, tc.status, tc.want)
		}
	}
}

// TestDaemonSQLiteFileInUse starts a second daemon on the SQLite file of a
// running one, as a careless restart or a second replica would: it must
// refuse to start, saying why, and leave the first serving.
func TestDaemonSQLiteFileInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"WEBHOOK_SECRET": "s", "DATABASE_URL": sqliteURL(filepath.Join(dir, "shared.db"))}
	first := startDaemon(t, env)
	defer first.stop(t, syscall.SIGTERM, 15*time.Second)

	second := launch(t, t.TempDir(), map[string]string{"WEBHOOK_SECRET": "s", "DATABASE_URL": env["DATABASE_URL"], "ADDR": "127.0.0.1:0"})
	if code := second.waitExit(t, 15*time.Second); code != 1 {
		t.Errorf("second daemon: exit status %d, want 1", code)
	}
	if out := second.stdout.text() + second.stderr.String(); !strings.Contains(out, "in use by another store") {
		t.Errorf("second daemon does not say the file is in use:\n%s", out)
	}

	body := []byte(`{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"hi"}`)
	if r := first.postSigned(t, "s", body, ""); r.status != http.StatusOK {
		t.Fatalf("first daemon after the refused start: webhook %d %s", r.status, r.body)
	}
	if r := first.get(t, "/stats", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), `"total_messages":1`) {
		t.Fatalf("first daemon's stats: %d %s", r.status, r.body)
	}
}
