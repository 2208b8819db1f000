package msgsvc_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msgsvc/msgsvc"
)

// --- POST /webhook: order of checks -----------------------------------------

func TestWebhookCheckOrder(t *testing.T) {
	bad := []byte(`{"message_id": 1}`) // breaks the payload rules
	good := body(t, nil)
	big := bytes.Repeat([]byte("x"), 2048)
	tests := []struct {
		name    string
		secret  string
		body    []byte
		headers func(b []byte) []string
		status  int
		detail  string
		result  string
	}{
		{
			name: "too large beats everything", secret: "", body: big,
			headers: func([]byte) []string { return []string{msgsvc.SignatureHeader, "nothex"} },
			status:  413, detail: "request body too large", result: "too_large",
		},
		{
			name: "no secret beats a bad signature", secret: "", body: bad,
			headers: func([]byte) []string { return []string{msgsvc.SignatureHeader, "nothex"} },
			status:  503, detail: "webhook secret not configured", result: "not_configured",
		},
		{
			name: "no secret beats a good signature", secret: "", body: good,
			headers: func(b []byte) []string { return []string{msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b)} },
			status:  503, detail: "webhook secret not configured", result: "not_configured",
		},
		{
			name: "bad signature beats a bad payload", secret: testSecret, body: bad,
			headers: func([]byte) []string { return []string{msgsvc.SignatureHeader, strings.Repeat("0", 64)} },
			status:  401, detail: "invalid signature", result: "invalid_signature",
		},
		{
			name: "signed bad payload", secret: testSecret, body: bad,
			headers: func(b []byte) []string { return []string{msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b)} },
			status:  422, result: "validation_error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *msgsvc.Config) { c.Secret = tc.secret; c.MaxBodyBytes = 1024 })
			rec := e.serve(t, webhookRequest(t, tc.body, tc.headers(tc.body)...))
			if tc.status == 422 {
				want422(t, rec)
			} else {
				wantDetail(t, rec, tc.status, tc.detail)
			}
			if n := e.total(t); n != 0 {
				t.Errorf("a refused request stored %d messages", n)
			}
			l := e.lastLog(t)
			if l["result"] != tc.result {
				t.Errorf("log result = %v, want %s", l["result"], tc.result)
			}
			wantLevel := "WARN"
			if tc.status >= 500 || tc.status == 401 {
				wantLevel = "ERROR"
			}
			if l["level"] != wantLevel {
				t.Errorf("log level = %v, want %s", l["level"], wantLevel)
			}
			wantMetric(t, e.metricsText(t), `webhook_requests_total{result="`+tc.result+`"}`, 1)
		})
	}
}

func TestWebhookBodyLimit(t *testing.T) {
	t.Run("default limit is 1 MiB", func(t *testing.T) {
		e := newEnv(t)
		// Exactly at the limit: read in full, then refused for its signature.
		at := bytes.Repeat([]byte(" "), msgsvc.DefaultMaxBodyBytes)
		wantDetail(t, e.serve(t, webhookRequest(t, at)), 401, "invalid signature")
		over := bytes.Repeat([]byte(" "), msgsvc.DefaultMaxBodyBytes+1)
		wantDetail(t, e.post(t, over), 413, "request body too large")
	})
	t.Run("declared length over the limit", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = 100 })
		r := webhookRequest(t, []byte(`{}`))
		r.ContentLength = 101 // refused on the declaration alone
		wantDetail(t, e.serve(t, r), 413, "request body too large")
	})
	t.Run("chunked body over the limit, recorder", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = 100 })
		b := body(t, map[string]any{"text": strings.Repeat("a", 200)})
		r := webhookRequest(t, b, msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b))
		r.ContentLength = -1
		wantDetail(t, e.serve(t, r), 413, "request body too large")
		if n := e.total(t); n != 0 {
			t.Errorf("stored %d", n)
		}
	})
	t.Run("configured limit admits a body at it", func(t *testing.T) {
		b := body(t, nil)
		e := newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = int64(len(b)) })
		r := webhookRequest(t, b, msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b))
		r.ContentLength = -1
		wantOK(t, e.serve(t, r))
	})

	t.Run("HTTP chunked over the default limit", func(t *testing.T) {
		e := newEnv(t)
		srv := httptest.NewServer(e.h)
		defer srv.Close()
		rd := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("z"), 3<<20)))
		resp, err := srv.Client().Post(srv.URL+"/webhook", "application/json", rd)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp.Body); resp.StatusCode != 413 || string(b) != `{"detail":"request body too large"}` {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})

	e := newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = 1024 })
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"HTTP declared length under", 1000, false, 401},
		{"HTTP declared length over", 1025, false, 413},
		{"HTTP chunked under", 1000, true, 401},
		{"HTTP chunked over", 4096, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader = bytes.NewReader(bytes.Repeat([]byte("y"), tc.size))
			if tc.chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/webhook", rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(msgsvc.SignatureHeader, strings.Repeat("ab", 32))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp.Body)
			if tc.chunked != (len(req.TransferEncoding) > 0 || req.ContentLength <= 0) {
				t.Fatalf("request framing is not what the case needs")
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestWebhookContentTypeNotChecked(t *testing.T) {
	e := newEnv(t)
	for i, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "", "application/xml"} {
		b := body(t, map[string]any{"message_id": fmt.Sprintf("ct-%d", i)})
		r := webhookRequest(t, b, msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b))
		r.Header.Set("Content-Type", ct)
		wantOK(t, e.serve(t, r))
	}
	if n := e.total(t); n != 4 {
		t.Errorf("stored %d, want 4", n)
	}
}

// --- POST /webhook: signatures -----------------------------------------------

func TestWebhookSignatures(t *testing.T) {
	b := body(t, nil)
	sig := msgsvc.Sign([]byte(testSecret), b)
	prevSig := msgsvc.Sign([]byte("old-secret"), b)
	wrong := msgsvc.Sign([]byte("wrong"), b)
	tests := []struct {
		name    string
		headers []string
		ok      bool
	}{
		{"X-Signature lower hex", []string{"X-Signature", sig}, true},
		{"X-Signature upper hex", []string{"X-Signature", strings.ToUpper(sig)}, true},
		{"X-Signature mixed hex", []string{"X-Signature", strings.ToUpper(sig[:10]) + sig[10:]}, true},
		{"X-Signature sha256= prefix", []string{"X-Signature", "sha256=" + sig}, true},
		{"X-Signature SHA256= prefix", []string{"X-Signature", "SHA256=" + sig}, true},
		{"X-Signature Sha256= prefix upper hex", []string{"X-Signature", "Sha256=" + strings.ToUpper(sig)}, true},
		{"X-Hub-Signature-256", []string{"X-Hub-Signature-256", "sha256=" + sig}, true},
		{"X-Hub-Signature-256 upper", []string{"X-Hub-Signature-256", "SHA256=" + strings.ToUpper(sig)}, true},
		{"header names any case", []string{"x-signature", sig}, true},
		{"previous secret", []string{"X-Signature", prevSig}, true},
		{"previous secret on hub header", []string{"X-Hub-Signature-256", "sha256=" + prevSig}, true},
		{"both headers, only X-Signature valid", []string{"X-Signature", sig, "X-Hub-Signature-256", "sha256=" + wrong}, true},
		{"both headers, only hub valid", []string{"X-Signature", wrong, "X-Hub-Signature-256", "sha256=" + sig}, true},
		{"both headers, hub valid, X-Signature malformed", []string{"X-Signature", "zz", "X-Hub-Signature-256", "sha256=" + sig}, true},

		{"missing", nil, false},
		{"wrong secret", []string{"X-Signature", wrong}, false},
		{"empty value", []string{"X-Signature", ""}, false},
		{"hub without prefix", []string{"X-Hub-Signature-256", sig}, false},
		{"hub with sha1 prefix", []string{"X-Hub-Signature-256", "sha1=" + sig}, false},
		{"truncated", []string{"X-Signature", sig[:63]}, false},
		{"one digit too many", []string{"X-Signature", sig + "0"}, false},
		{"not hex", []string{"X-Signature", "g" + sig[1:]}, false},
		{"surrounding space", []string{"X-Signature", " " + sig}, false},
		{"prefix only", []string{"X-Signature", "sha256="}, false},
		{"double prefix", []string{"X-Signature", "sha256=sha256=" + sig}, false},
		{"signature of other bytes", []string{"X-Signature", msgsvc.Sign([]byte(testSecret), append(b, ' '))}, false},
		{"both headers wrong", []string{"X-Signature", wrong, "X-Hub-Signature-256", "sha256=" + wrong}, false},
		{"signature of the empty secret", []string{"X-Signature", msgsvc.Sign(nil, b)}, false},
		{"wrong header name", []string{"X-Hub-Signature", "sha256=" + sig}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *msgsvc.Config) { c.PreviousSecret = "old-secret" })
			rec := e.serve(t, webhookRequest(t, b, tc.headers...))
			if tc.ok {
				wantOK(t, rec)
				if n := e.total(t); n != 1 {
					t.Errorf("stored %d, want 1", n)
				}
				return
			}
			wantDetail(t, rec, 401, "invalid signature")
			if n := e.total(t); n != 0 {
				t.Errorf("stored %d, want 0", n)
			}
		})
	}
}

func TestWebhookSecretsConfig(t *testing.T) {
	b := body(t, nil)
	t.Run("previous secret alone does not configure", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.Secret = ""; c.PreviousSecret = "old" })
		rec := e.serve(t, webhookRequest(t, b, "X-Signature", msgsvc.Sign([]byte("old"), b)))
		wantDetail(t, rec, 503, "webhook secret not configured")
		wantDetail(t, e.get(t, "/health/ready"), 503, "webhook secret not configured")
	})
	t.Run("empty secret never verifies", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.Secret = "" })
		rec := e.serve(t, webhookRequest(t, b, "X-Signature", msgsvc.Sign(nil, b)))
		wantDetail(t, rec, 503, "webhook secret not configured")
	})
	t.Run("current secret still works during a rotation", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.PreviousSecret = "old" })
		wantOK(t, e.post(t, b))
	})
}

// --- POST /webhook: payload validation ---------------------------------------

// fieldCase is one value of one field and whether the contract accepts it.
type fieldCase struct {
	name  string
	field string
	value any // a JSON value, or absent
	ok    bool
}

func fieldCases() []fieldCase {
	return []fieldCase{
		{"message_id 1 char", "message_id", "a", true},
		{"message_id 256 ascii", "message_id", strings.Repeat("i", 256), true},
		{"message_id 256 multibyte", "message_id", strings.Repeat("é", 256), true},
		{"message_id 256 astral", "message_id", strings.Repeat("😀", 256), true},
		{"message_id 257 multibyte", "message_id", strings.Repeat("é", 257), false},
		{"message_id 257 ascii", "message_id", strings.Repeat("i", 257), false},
		{"message_id empty", "message_id", "", false},
		{"message_id absent", "message_id", absent, false},
		{"message_id null", "message_id", nil, false},
		{"message_id NUL", "message_id", "a\x00b", false},

		{"from +12", "from", "+12", true},
		{"from 15 digits", "from", "+123456789012345", true},
		{"from +1", "from", "+1", false},
		{"from 16 digits", "from", "+1234567890123456", false},
		{"from leading 0", "from", "+0123456789", false},
		{"from no plus", "from", "919876543210", false},
		{"from double plus", "from", "++919876543210", false},
		{"from spaces", "from", "+91 98765 43210", false},
		{"from trailing newline", "from", "+919876543210\n", false},
		{"from arabic digits", "from", "+٩١٢٣", false},
		{"from fullwidth digits", "from", "+１２３", false},
		{"from empty", "from", "", false},
		{"from absent", "from", absent, false},
		{"from NUL", "from", "+91\x00", false},
		{"to 15 digits", "to", "+999999999999999", true},
		{"to +1", "to", "+1", false},
		{"to absent", "to", absent, false},
		{"to leading 0", "to", "+0", false},

		{"ts plain", "ts", "2025-01-15T10:00:00Z", true},
		{"ts lowercase z", "ts", "2025-01-15T10:00:00z", false},
		{"ts offset", "ts", "2025-01-15T10:00:00+00:00", false},
		{"ts offset +05:30", "ts", "2025-01-15T15:30:00+05:30", false},
		{"ts no zone", "ts", "2025-01-15T10:00:00", false},
		{"ts year 0001", "ts", "0001-01-01T00:00:00Z", true},
		{"ts year 9999", "ts", "9999-12-31T23:59:59.999999999Z", true},
		{"ts year 0000", "ts", "0000-01-01T00:00:00Z", false},
		{"ts five-digit year", "ts", "10000-01-01T00:00:00Z", false},
		{"ts seconds 59", "ts", "2025-01-15T23:59:59Z", true},
		{"ts seconds 60", "ts", "2016-12-31T23:59:60Z", false},
		{"ts minute 60", "ts", "2025-01-15T10:60:00Z", false},
		{"ts hour 24", "ts", "2025-01-15T24:00:00Z", false},
		{"ts 2025-02-30", "ts", "2025-02-30T00:00:00Z", false},
		{"ts 2025-04-31", "ts", "2025-04-31T00:00:00Z", false},
		{"ts month 13", "ts", "2025-13-01T00:00:00Z", false},
		{"ts month 00", "ts", "2025-00-01T00:00:00Z", false},
		{"ts day 00", "ts", "2025-01-00T00:00:00Z", false},
		{"ts 2024-02-29", "ts", "2024-02-29T00:00:00Z", true},
		{"ts 2023-02-29", "ts", "2023-02-29T00:00:00Z", false},
		{"ts 1900-02-29", "ts", "1900-02-29T00:00:00Z", false},
		{"ts 2000-02-29", "ts", "2000-02-29T00:00:00Z", true},
		{"ts fraction 1 digit", "ts", "2025-01-15T10:00:00.5Z", true},
		{"ts fraction 9 digits", "ts", "2025-01-15T10:00:00.123456789Z", true},
		{"ts fraction 10 digits", "ts", "2025-01-15T10:00:00.1234567890Z", false},
		{"ts dot without digits", "ts", "2025-01-15T10:00:00.Z", false},
		{"ts comma fraction", "ts", "2025-01-15T10:00:00,5Z", false},
		{"ts space separator", "ts", "2025-01-15 10:00:00Z", false},
		{"ts date only", "ts", "2025-01-15", false},
		{"ts one-digit month", "ts", "2025-1-15T10:00:00Z", false},
		{"ts trailing text", "ts", "2025-01-15T10:00:00Zjunk", false},
		{"ts signed year", "ts", "+2025-01-15T10:00:00Z", false},
		{"ts unix number string", "ts", "1736935200", false},
		{"ts empty", "ts", "", false},
		{"ts absent", "ts", absent, false},
		{"ts NUL", "ts", "2025-01-15T10:00:00Z\x00", false},

		{"text absent", "text", absent, true},
		{"text null", "text", nil, true},
		{"text empty", "text", "", true},
		{"text 4096 ascii", "text", strings.Repeat("t", 4096), true},
		{"text 4096 multibyte", "text", strings.Repeat("ü", 4096), true},
		{"text 4096 astral", "text", strings.Repeat("😀", 4096), true},
		{"text 4097 ascii", "text", strings.Repeat("t", 4097), false},
		{"text 4097 multibyte", "text", strings.Repeat("ü", 4097), false},
		{"text NUL", "text", "hello\x00world", false},
		{"text other control characters", "text", "tab\tnewline\n\x01", true},
	}
}

// wrongTypes are JSON values that are not strings.
var wrongTypes = []struct {
	name  string
	value any
}{
	{"number", 42},
	{"float", 1.5},
	{"bool", true},
	{"object", map[string]any{"a": "b"}},
	{"array", []any{"x"}},
}

func TestWebhookValidation(t *testing.T) {
	e := newEnv(t)
	for i, tc := range fieldCases() {
		t.Run(tc.name, func(t *testing.T) {
			fields := map[string]any{tc.field: tc.value}
			if tc.field != "message_id" {
				fields["message_id"] = fmt.Sprintf("case-%d", i)
			}
			rec := e.post(t, body(t, fields))
			if tc.ok {
				wantOK(t, rec)
				return
			}
			items := want422(t, rec)
			if got := locs(items); !slices.Equal(got, []string{"body." + tc.field}) {
				t.Errorf("locs = %v, want [body.%s]", got, tc.field)
			}
		})
	}
	for _, field := range []string{"message_id", "from", "to", "ts", "text"} {
		for _, wt := range wrongTypes {
			t.Run(field+" as "+wt.name, func(t *testing.T) {
				items := want422(t, e.post(t, body(t, map[string]any{field: wt.value})))
				if got := locs(items); !slices.Equal(got, []string{"body." + field}) {
					t.Errorf("locs = %v", got)
				}
				if items[0].Type != "string_type" {
					t.Errorf("type = %q, want string_type", items[0].Type)
				}
			})
		}
	}
}

func TestWebhookValidationListsEveryField(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		body string
		locs []string
	}{
		{"every field a wrong type", `{"message_id":1,"from":true,"to":{},"ts":[],"text":2}`,
			[]string{"body.message_id", "body.from", "body.to", "body.ts", "body.text"}},
		{"every rule broken", `{"message_id":"","from":"+1","to":"0","ts":"2025-02-30T00:00:00Z","text":"` + strings.Repeat("x", 4097) + `"}`,
			[]string{"body.message_id", "body.from", "body.to", "body.ts", "body.text"}},
		{"empty object", `{}`, []string{"body.message_id", "body.from", "body.to", "body.ts"}},
		{"NUL everywhere", `{"message_id":"\u0000","from":"\u0000","to":"\u0000","ts":"\u0000","text":"\u0000"}`,
			[]string{"body.message_id", "body.from", "body.to", "body.ts", "body.text"}},
		{"two fields", `{"message_id":"x","from":"+919876543210","to":"bad","ts":"bad"}`,
			[]string{"body.to", "body.ts"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			items := want422(t, e.post(t, []byte(tc.body)))
			if got := locs(items); !slices.Equal(got, tc.locs) {
				t.Errorf("locs = %v, want %v", got, tc.locs)
			}
		})
	}
	if n := e.total(t); n != 0 {
		t.Errorf("stored %d", n)
	}
}

func TestWebhookMalformedBodies(t *testing.T) {
	e := newEnv(t)
	valid := string(body(t, nil))
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"whitespace", "  \n"},
		{"array", `[` + valid + `]`},
		{"string", `"hello"`},
		{"number", `42`},
		{"null", `null`},
		{"true", `true`},
		{"trailing garbage", valid + `x`},
		{"two objects", valid + valid},
		{"truncated", valid[:len(valid)-1]},
		{"invalid UTF-8 in a value", `{"message_id":"m` + "\xff" + `","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z"}`},
		{"invalid UTF-8 in text", `{"message_id":"m","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"` + "\xc3\x28" + `"}`},
		{"invalid UTF-8 in an unknown key", `{"message_id":"m","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","` + "\xfe" + `":1}`},
		{"raw NUL byte in a string", "{\"message_id\":\"a\x00\",\"from\":\"+919876543210\",\"to\":\"+14155550100\",\"ts\":\"2025-01-15T10:00:00Z\"}"},
		{"single quotes", `{'message_id':'m'}`},
		{"form encoded", `message_id=m&from=%2B919876543210`},
		{"BOM", "\ufeff" + valid},
		{"deep nesting", `{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want422(t, e.post(t, []byte(tc.body)))
		})
	}
	if n := e.total(t); n != 0 {
		t.Errorf("stored %d", n)
	}
}

func TestWebhookUnknownAndDuplicateKeys(t *testing.T) {
	e := newEnv(t)
	wantOK(t, e.post(t, []byte(`{"message_id":"u1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"hi","extra":{"nested":[1,2]},"TEXT":5}`)))
	// The last of a repeated key counts, whether the first was valid or not.
	wantOK(t, e.post(t, []byte(`{"message_id":"u2","from":"bad","from":"+12","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"first","text":"second"}`)))
	want422(t, e.post(t, []byte(`{"message_id":"u3","from":"+12","from":"bad","to":"+14155550100","ts":"2025-01-15T10:00:00Z"}`)))
	p := e.list(t, "")
	if got := ids(p.Data); !slices.Equal(got, []string{"u1", "u2"}) {
		t.Fatalf("ids = %v", got)
	}
	if p.Data[1].From != "+12" || p.Data[1].Text == nil || *p.Data[1].Text != "second" {
		t.Errorf("u2 = %+v, want last keys", p.Data[1])
	}
	if p.Data[0].Text == nil || *p.Data[0].Text != "hi" {
		t.Errorf("u1 text: keys are case-sensitive, got %+v", p.Data[0])
	}
}

func TestWebhookStoresAsReceived(t *testing.T) {
	e := newEnv(t)
	// JSON escapes decode; the stored values are the decoded strings.
	wantOK(t, e.post(t, []byte(`{"message_id":"\u00e9\ud83d\ude00","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00.500Z","text":"\u003cb\u003e \"q\" \\ é"}`)))
	wantOK(t, e.post(t, body(t, map[string]any{"message_id": "no-text", "text": absent})))
	p := e.list(t, "")
	want := []msgsvc.Message{
		{MessageID: "é😀", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00.500Z", Text: ptr(`<b> "q" \ é`)},
		{MessageID: "no-text", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"},
	}
	// Order: 10:00:00Z before 10:00:00.500Z.
	slices.Reverse(want)
	if len(p.Data) != 2 {
		t.Fatalf("data = %+v", p.Data)
	}
	for i := range want {
		if !equalMessage(p.Data[i], want[i]) {
			t.Errorf("data[%d] = %+v, want %+v", i, p.Data[i], want[i])
		}
	}
	rec := e.get(t, "/messages")
	if !strings.Contains(rec.Body.String(), `"ts":"2025-01-15T10:00:00.500Z"`) || !strings.Contains(rec.Body.String(), `"text":null`) {
		t.Errorf("ts not echoed or null text missing: %s", rec.Body)
	}
}

func equalMessage(a, b msgsvc.Message) bool {
	if (a.Text == nil) != (b.Text == nil) || (a.Text != nil && *a.Text != *b.Text) {
		return false
	}
	a.Text, b.Text = nil, nil
	return a == b
}

// --- POST /webhook: idempotency ----------------------------------------------

func TestWebhookFirstWriteWins(t *testing.T) {
	e := newEnv(t)
	wantOK(t, e.post(t, body(t, map[string]any{"message_id": "dup", "text": "first"})))
	wantOK(t, e.post(t, body(t, map[string]any{"message_id": "dup", "text": "second", "from": "+12"})))
	p := e.list(t, "")
	if p.Total != 1 || *p.Data[0].Text != "first" || p.Data[0].From != "+919876543210" {
		t.Fatalf("page = %+v, want the first write only", p)
	}
	lines := e.logLines(t)
	if got := lines[0]; got["result"] != "created" || got["dup"] != false {
		t.Errorf("first log = %v", got)
	}
	if got := lines[1]; got["result"] != "duplicate" || got["dup"] != true || got["message_id"] != "dup" {
		t.Errorf("second log = %v", got)
	}
	m := e.metricsText(t)
	wantMetric(t, m, `webhook_requests_total{result="created"}`, 1)
	wantMetric(t, m, `webhook_requests_total{result="duplicate"}`, 1)
	st := e.stats(t)
	if st.TotalMessages != 1 || st.SendersCount != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWebhookConcurrentDuplicates(t *testing.T) {
	e := newEnv(t)
	const n = 50
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			b := body(t, map[string]any{"message_id": "same", "text": fmt.Sprintf("copy %d", i)})
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhook", bytes.NewReader(b))
			req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), b))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d", i, c)
		}
	}
	if got := e.total(t); got != 1 {
		t.Errorf("stored %d rows, want 1", got)
	}
	m := e.metricsText(t)
	wantMetric(t, m, `webhook_requests_total{result="created"}`, 1)
	wantMetric(t, m, `webhook_requests_total{result="duplicate"}`, n-1)
	wantMetric(t, m, `http_requests_total{path="/webhook",status="200"}`, n)
}

// --- GET /messages ---------------------------------------------------------------

func TestMessagesQueryValidation(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		query string
		locs  []string
	}{
		{"limit=0", []string{"query.limit"}},
		{"limit=101", []string{"query.limit"}},
		{"limit=-1", []string{"query.limit"}},
		{"limit=abc", []string{"query.limit"}},
		{"limit=", []string{"query.limit"}},
		{"limit=1.5", []string{"query.limit"}},
		{"limit=%201", []string{"query.limit"}},
		{"limit=99999999999999999999999", []string{"query.limit"}},
		{"offset=-1", []string{"query.offset"}},
		{"offset=x", []string{"query.offset"}},
		{"offset=", []string{"query.offset"}},
		{"limit=0&offset=-1", []string{"query.limit", "query.offset"}},
		{"since=yesterday", []string{"query.since"}},
		{"since=2025-01-15", []string{"query.since"}},
		{"since=2025-01-15T10:00:00", []string{"query.since"}},
		{"since=2025-01-15T10:00:00%2B5:30", []string{"query.since"}},
		{"since=2025-02-30T10:00:00Z", []string{"query.since"}},
		{"since=2025-01-15T10:00:00%2B24:00", []string{"query.since"}},
		{"cursor=abc", []string{"query.cursor"}},
		{"cursor=!!!!", []string{"query.cursor"}},
		{"cursor=" + msgsvc.EncodeCursor(msgsvc.Position{Key: "2025-01-15T10:00:00.000000000Z", MessageID: "a"}) + "&offset=1", []string{"query.cursor"}},
		{"limit=500&since=bad&cursor=bad", []string{"query.limit", "query.since", "query.cursor"}},
		{"q=%ff", []string{"query.q"}},
		{"from=%ff", []string{"query.from"}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			items := want422(t, e.get(t, "/messages?"+tc.query))
			if got := locs(items); !slices.Equal(got, tc.locs) {
				t.Errorf("locs = %v, want %v", got, tc.locs)
			}
		})
	}
	t.Run("accepted bounds", func(t *testing.T) {
		for _, q := range []string{"", "limit=1", "limit=100", "offset=0", "offset=1000000", "from=&since=&q=&cursor=",
			"cursor=" + msgsvc.EncodeCursor(msgsvc.Position{Key: "2025-01-15T10:00:00.000000000Z", MessageID: "a"}) + "&offset=0"} {
			e.list(t, q)
		}
	})
}

func TestMessagesDefaultsAndEmpty(t *testing.T) {
	e := newEnv(t)
	rec := e.get(t, "/messages")
	if rec.Body.String() != `{"data":[],"total":0,"limit":50,"offset":0,"next_cursor":null}` {
		t.Errorf("empty page = %s", rec.Body)
	}
	for i := range 60 {
		e.seed(t, msg(fmt.Sprintf("m%02d", i), "+919876543210", "2025-01-15T10:00:00Z", nil))
	}
	p := e.list(t, "")
	if len(p.Data) != 50 || p.Limit != 50 || p.Offset != 0 || p.Total != 60 || p.NextCursor == nil {
		t.Errorf("default page: %d rows, limit %d, offset %d, total %d, next %v", len(p.Data), p.Limit, p.Offset, p.Total, p.NextCursor)
	}
	p = e.list(t, "limit=7&offset=55")
	if len(p.Data) != 5 || p.Limit != 7 || p.Offset != 55 || p.Total != 60 || p.NextCursor != nil {
		t.Errorf("last page: %d rows, limit %d, offset %d, total %d, next %v", len(p.Data), p.Limit, p.Offset, p.Total, p.NextCursor)
	}
	p = e.list(t, "offset=1000")
	if len(p.Data) != 0 || p.Total != 60 || p.NextCursor != nil {
		t.Errorf("past the end: %+v", p)
	}
	// Empty from/since/q/cursor mean absent.
	if p := e.list(t, "from=&since=&q=&cursor=&limit=100"); p.Total != 60 || len(p.Data) != 60 {
		t.Errorf("empty params filtered: total %d", p.Total)
	}
	// Of a repeated parameter, the last counts.
	if p := e.list(t, "limit=1&limit=3"); p.Limit != 3 || len(p.Data) != 3 {
		t.Errorf("repeated limit: %d", p.Limit)
	}
}

func TestMessagesOrdering(t *testing.T) {
	e := newEnv(t)
	e.seed(t,
		msg("z", "+12", "2025-01-15T10:00:00.5Z", nil),
		msg("y", "+12", "2025-01-15T10:00:00Z", nil),
		msg("é", "+12", "2025-01-15T10:00:00.000Z", nil),
		msg("a", "+12", "2025-01-15T10:00:00.000000000Z", nil),
		msg("B", "+12", "2025-01-15T10:00:00.0Z", nil),
		msg("x", "+12", "2025-01-15T10:00:00.50Z", nil),
		msg("w", "+12", "2025-01-15T10:00:00.499999999Z", nil),
		msg("v", "+12", "2025-01-15T09:59:59.999999999Z", nil),
		msg("u", "+12", "2024-12-31T23:59:59Z", nil),
		msg("t", "+12", "0001-01-01T00:00:00Z", nil),
		msg("s", "+12", "9999-12-31T23:59:59.9Z", nil),
		msg("r", "+12", "2025-01-15T10:00:01Z", nil),
	)
	p := e.list(t, "")
	want := []string{"t", "u", "v", "B", "a", "y", "é", "w", "x", "z", "r", "s"}
	if got := ids(p.Data); !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	wantTS := map[string]string{"z": "2025-01-15T10:00:00.5Z", "é": "2025-01-15T10:00:00.000Z", "B": "2025-01-15T10:00:00.0Z"}
	for _, m := range p.Data {
		if ts, ok := wantTS[m.MessageID]; ok && m.TS != ts {
			t.Errorf("%s: ts %q not echoed as received %q", m.MessageID, m.TS, ts)
		}
	}
}

func TestWebhookRefusesLowercaseTSeparator(t *testing.T) {
	// The contract spells ts as YYYY-MM-DDTHH:MM:SS[.fraction]Z: an uppercase
	// T as well as an uppercase Z. (since, a query bound, takes any RFC 3339.)
	e := newEnv(t)
	rec := e.post(t, body(t, map[string]any{"message_id": "lower", "ts": "2025-01-15t10:00:00Z"}))
	if rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("status = %d, want 422", rec.Code)
	}
	if p := e.list(t, ""); len(p.Data) != 0 {
		t.Errorf("a refused message was stored: %v", ids(p.Data))
	}
	if p := e.list(t, "since=2025-01-15t10:30:00z"); p.Total != 0 {
		t.Errorf("since with lowercase t and z: total %d", p.Total)
	}
}

func TestMessagesFrom(t *testing.T) {
	e := newEnv(t)
	e.seed(t,
		msg("a", "+919876543210", "2025-01-15T10:00:00Z", nil),
		msg("b", "+14155550100", "2025-01-15T10:00:01Z", nil),
		msg("c", "+919876543210", "2025-01-15T10:00:02Z", nil),
	)
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"from=%2B919876543210", []string{"a", "c"}},
		{"from=+919876543210", []string{"a", "c"}}, // raw "+" arrives as a space
		{"from=%20919876543210", []string{"a", "c"}},
		{"from=919876543210", nil},
		{"from=%2B91987654321", nil},
		{"from=+14155550100", []string{"b"}},
		{"from=", []string{"a", "b", "c"}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			p := e.list(t, tc.query)
			if got := ids(p.Data); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("ids = %v, want %v", got, tc.want)
			}
			if p.Total != int64(len(tc.want)) {
				t.Errorf("total = %d, want %d", p.Total, len(tc.want))
			}
		})
	}
}

func TestMessagesSince(t *testing.T) {
	e := newEnv(t)
	e.seed(t,
		msg("a", "+12", "2025-01-15T09:59:59.999999999Z", nil),
		msg("b", "+12", "2025-01-15T10:00:00Z", nil),
		msg("c", "+12", "2025-01-15T10:00:00.5Z", nil),
		msg("d", "+12", "2025-01-16T00:00:00Z", nil),
	)
	for _, tc := range []struct {
		since string // as written in the URL
		want  []string
	}{
		{"2025-01-15T10:00:00Z", []string{"b", "c", "d"}},
		{"2025-01-15T10:00:00.000Z", []string{"b", "c", "d"}},
		{"2025-01-15T10:00:00z", []string{"b", "c", "d"}},
		{"2025-01-15T15:30:00%2B05:30", []string{"b", "c", "d"}},
		{"2025-01-15T15:30:00+05:30", []string{"b", "c", "d"}}, // raw "+" arrives as a space
		{"2025-01-15T05:00:00-05:00", []string{"b", "c", "d"}},
		{"2025-01-15T10:00:00%2B00:00", []string{"b", "c", "d"}},
		{"2025-01-15T10:00:00.000000001Z", []string{"c", "d"}},
		{"2025-01-15T10:00:00.5Z", []string{"c", "d"}},
		{"2025-01-15T10:00:00.500000001Z", []string{"d"}},
		{"2025-01-15T09:59:59.999999999Z", []string{"a", "b", "c", "d"}},
		{"2025-01-16T05:30:00%2B05:30", []string{"d"}},
		{"2025-01-16T00:00:00.000000001Z", nil},
		{"0001-01-01T00:00:00%2B05:00", []string{"a", "b", "c", "d"}},
		{"9999-12-31T23:00:00-05:00", nil},
		{"", []string{"a", "b", "c", "d"}},
	} {
		t.Run(tc.since, func(t *testing.T) {
			p := e.list(t, "since="+tc.since)
			if got := ids(p.Data); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("ids = %v, want %v", got, tc.want)
			}
			if p.Total != int64(len(tc.want)) {
				t.Errorf("total = %d", p.Total)
			}
		})
	}
}

func TestMessagesTextSearch(t *testing.T) {
	e := newEnv(t)
	texts := map[string]*string{
		"ecole":    ptr("Bonjour l'école"),
		"greek":    ptr("ΣΊΣΥΦΟΣ"),
		"cyrillic": ptr("Привет, МИР"),
		"kelvin":   ptr("300 \u212A outside"), // KELVIN SIGN
		"k":        ptr("pick"),
		"percent":  ptr("100% sure"),
		"under":    ptr("a_b file"),
		"backsl":   ptr(`C:\path`),
		"plain":    ptr("hello world"),
		"strasse":  ptr("Straße"),
		"null":     nil,
		"nulltext": ptr("null"),
	}
	i := 0
	for id, text := range texts {
		e.seed(t, msg(id, "+12", fmt.Sprintf("2025-01-15T10:00:%02dZ", i), text))
		i++
	}
	for _, tc := range []struct {
		q    string // URL-encoded
		want []string
	}{
		{"%C3%89COLE", []string{"ecole"}}, // q=ÉCOLE
		{"%C3%A9cole", []string{"ecole"}}, // q=école
		{"ecole", nil},                    // no normalisation or accent stripping
		{"%CF%83%CE%AF%CF%83%CF%85%CF%86%CE%BF%CF%82", []string{"greek"}}, // σίσυφος, final sigma folds with Σ
		{"%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82", []string{"cyrillic"}},    // привет
		{"%D0%BC%D0%B8%D1%80", []string{"cyrillic"}},                      // мир
		{"k", []string{"k", "kelvin"}},
		{"K", []string{"k", "kelvin"}},
		{"%E2%84%AA", []string{"k", "kelvin"}}, // q=KELVIN SIGN
		{"%25", []string{"percent"}},           // q=%
		{"_", []string{"under"}},
		{"%5C", []string{"backsl"}}, // q=\
		{"%5Cp", []string{"backsl"}},
		{"h_llo", nil},                       // "_" is no wildcard
		{"hel%25rld", nil},                   // nor is "%"
		{"100%25+sure", []string{"percent"}}, // "+" is a space
		{"o+w", []string{"plain"}},
		{"%20hello", nil}, // not trimmed
		{"world%20", nil},
		{"null", []string{"nulltext"}},          // never the null text
		{"STRA%E1%BA%9EE", []string{"strasse"}}, // ẞ folds with ß
		{"strasse", nil},                        // simple folding: ß is not ss
		{"", []string{"ecole", "greek", "cyrillic", "kelvin", "k", "percent", "under", "backsl", "plain", "strasse", "null", "nulltext"}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p := e.list(t, "limit=100&q="+tc.q)
			got := ids(p.Data)
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("ids = %v, want %v", got, want)
			}
			if p.Total != int64(len(want)) {
				t.Errorf("total = %d, want %d", p.Total, len(want))
			}
		})
	}
}

func TestMessagesPagination(t *testing.T) {
	e := newEnv(t)
	var all []string
	for i := range 11 {
		from := "+12"
		if i%2 == 1 {
			from = "+13"
		}
		id := fmt.Sprintf("p%02d", i)
		// Pairs share an instant written differently, so ties are broken by id.
		e.seed(t, msg(id, from, fmt.Sprintf("2025-01-15T10:00:%02d.%sZ", i/2, strings.Repeat("0", 1+i%3)), ptr("page")))
		all = append(all, id)
	}
	walk := func(t *testing.T, filters string, first listPage) []string {
		t.Helper()
		got := ids(first.Data)
		p := first
		for pages := 0; p.NextCursor != nil; pages++ {
			if pages > 20 {
				t.Fatal("cursor walk does not end")
			}
			p = e.list(t, filters+"&cursor="+url.QueryEscape(*p.NextCursor))
			if p.Offset != 0 {
				t.Errorf("cursor page offset = %d, want 0", p.Offset)
			}
			if p.Total != first.Total {
				t.Errorf("cursor page total = %d, want %d", p.Total, first.Total)
			}
			got = append(got, ids(p.Data)...)
		}
		return got
	}
	t.Run("cursor walk", func(t *testing.T) {
		first := e.list(t, "limit=3")
		if got := walk(t, "limit=3", first); !slices.Equal(got, all) {
			t.Errorf("walk = %v, want %v", got, all)
		}
	})
	t.Run("cursor walk exact multiple", func(t *testing.T) {
		first := e.list(t, "limit=11")
		if first.NextCursor != nil {
			t.Errorf("single full page has next_cursor %q", *first.NextCursor)
		}
		p := e.list(t, "limit=10")
		if p.NextCursor == nil {
			t.Fatal("no next_cursor with one row left")
		}
		last := e.list(t, "limit=10&cursor="+*p.NextCursor)
		if got := ids(last.Data); !slices.Equal(got, all[10:]) || last.NextCursor != nil {
			t.Errorf("last page = %v next %v", got, last.NextCursor)
		}
	})
	t.Run("offset page then cursor", func(t *testing.T) {
		p := e.list(t, "limit=4&offset=4")
		if got := ids(p.Data); !slices.Equal(got, all[4:8]) {
			t.Fatalf("offset page = %v", got)
		}
		if p.NextCursor == nil {
			t.Fatal("offset page with rows after has no next_cursor")
		}
		if got := walk(t, "limit=4", p); !slices.Equal(got, all[4:]) {
			t.Errorf("walk from offset 4 = %v", got)
		}
		if p := e.list(t, "limit=4&offset=7"); p.NextCursor != nil {
			t.Errorf("last offset page has next_cursor")
		}
	})
	t.Run("filters are the request's own", func(t *testing.T) {
		first := e.list(t, "limit=2&from=%2B13")
		var want []string
		for i, id := range all {
			if i%2 == 1 {
				want = append(want, id)
			}
		}
		if got := walk(t, "limit=2&from=%2B13", first); !slices.Equal(got, want) {
			t.Errorf("filtered walk = %v, want %v", got, want)
		}
		if first.Total != int64(len(want)) {
			t.Errorf("total = %d", first.Total)
		}
		// A cursor from an unfiltered page used with a filter continues at
		// that position under the new filter.
		p := e.list(t, "limit=5")
		q := e.list(t, "limit=100&from=%2B12&cursor="+*p.NextCursor)
		if got := ids(q.Data); !slices.Equal(got, []string{"p06", "p08", "p10"}) {
			t.Errorf("cursor reused with a filter = %v", got)
		}
	})
}

// --- GET /stats ----------------------------------------------------------------

type statsBody struct {
	TotalMessages     int64                `json:"total_messages"`
	SendersCount      int64                `json:"senders_count"`
	MessagesPerSender []msgsvc.SenderCount `json:"messages_per_sender"`
	FirstMessageTS    *string              `json:"first_message_ts"`
	LastMessageTS     *string              `json:"last_message_ts"`
}

func (e *env) stats(tb testing.TB) statsBody {
	tb.Helper()
	rec := e.get(tb, "/stats")
	if rec.Code != 200 {
		tb.Fatalf("GET /stats: %d %s", rec.Code, rec.Body)
	}
	var s statsBody
	decodeJSON(tb, rec, &s)
	return s
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	if rec := e.get(t, "/stats"); rec.Body.String() != `{"total_messages":0,"senders_count":0,"messages_per_sender":[],"first_message_ts":null,"last_message_ts":null}` {
		t.Errorf("empty stats = %s", rec.Body)
	}
	// 12 senders: +20 sends 1, +21 sends 2, ... with ties at 3 and at 1.
	counts := map[string]int{
		"+20": 5, "+21": 3, "+22": 3, "+23": 1, "+24": 7, "+25": 2,
		"+26": 3, "+27": 1, "+28": 4, "+29": 2, "+30": 1, "+19": 1,
	}
	n := 0
	for from, c := range counts {
		for range c {
			n++
			e.seed(t, msg(fmt.Sprintf("s%03d", n), from, fmt.Sprintf("2025-01-12T10:%02d:00Z", n), nil))
		}
	}
	e.seed(t,
		msg("first-b", "+19", "2025-01-10T09:00:00Z", nil),
		msg("first-a", "+19", "2025-01-10T09:00:00.000Z", nil), // same instant, smaller id: first
		msg("last-a", "+19", "2025-01-15T10:00:00.5Z", nil),
		msg("last-b", "+19", "2025-01-15T10:00:00.50Z", nil), // same instant, larger id: last
	)
	n += 4
	counts["+19"] += 4
	st := e.stats(t)
	want := []msgsvc.SenderCount{
		{"+24", 7}, {"+19", 5}, {"+20", 5}, {"+28", 4}, {"+21", 3}, {"+22", 3}, {"+26", 3},
		{"+25", 2}, {"+29", 2}, {"+23", 1},
	}
	if !slices.Equal(st.MessagesPerSender, want) {
		t.Errorf("messages_per_sender = %v, want %v", st.MessagesPerSender, want)
	}
	if st.TotalMessages != int64(n) || st.SendersCount != int64(len(counts)) {
		t.Errorf("total %d senders %d, want %d %d", st.TotalMessages, st.SendersCount, n, len(counts))
	}
	if st.FirstMessageTS == nil || *st.FirstMessageTS != "2025-01-10T09:00:00.000Z" {
		t.Errorf("first_message_ts = %v", st.FirstMessageTS)
	}
	if st.LastMessageTS == nil || *st.LastMessageTS != "2025-01-15T10:00:00.50Z" {
		t.Errorf("last_message_ts = %v", st.LastMessageTS)
	}
	// A duplicate changes nothing.
	e.seed(t, msg("s001", "+99", "2030-01-01T00:00:00Z", nil))
	if st2 := e.stats(t); st2.TotalMessages != st.TotalMessages || st2.SendersCount != st.SendersCount || *st2.LastMessageTS != *st.LastMessageTS {
		t.Errorf("duplicate changed stats: %+v", st2)
	}
}

// --- metrics -------------------------------------------------------------------

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	start := e.metricsText(t)
	for _, r := range []string{"created", "duplicate", "invalid_signature", "validation_error", "too_large", "not_configured", "store_error", "ignored"} {
		wantMetric(t, start, `webhook_requests_total{result="`+r+`"}`, 0)
	}
	e.seed(t, msg("m1", "+12", "2025-01-15T10:00:00Z", nil))
	e.get(t, "/messages?from=%2B12")
	e.get(t, "/messages?limit=0")
	e.get(t, "/nope")
	e.get(t, "/messages/")
	e.get(t, "/webhook")                                                                // 405
	e.serve(t, httptest.NewRequest(http.MethodDelete, "/stats", nil))                   // 405
	e.serve(t, httptest.NewRequest(http.MethodPost, "/webhook?x=%2B919876543210", nil)) // 401
	e.get(t, "/metrics")
	m := e.metricsText(t)
	wantMetric(t, m, `http_requests_total{path="/webhook",status="200"}`, 1)
	wantMetric(t, m, `http_requests_total{path="/webhook",status="401"}`, 1)
	wantMetric(t, m, `http_requests_total{path="/messages",status="200"}`, 1)
	wantMetric(t, m, `http_requests_total{path="/messages",status="422"}`, 1)
	wantMetric(t, m, `http_requests_total{path="unmatched",status="404"}`, 2)
	wantMetric(t, m, `http_requests_total{path="unmatched",status="405"}`, 2)
	wantMetric(t, m, `http_requests_total{path="/metrics",status="200"}`, 2)
	wantMetric(t, m, `webhook_requests_total{result="created"}`, 1)
	wantMetric(t, m, `webhook_requests_total{result="invalid_signature"}`, 1)
	for _, le := range []string{"100", "500", "1000", "2000", "5000", "+Inf"} {
		wantMetric(t, m, `request_latency_ms_bucket{path="/webhook",le="`+le+`"}`, 2)
	}
	wantMetric(t, m, `request_latency_ms_count{path="unmatched"}`, 4)
	var buckets []string
	for line := range strings.Lines(m) {
		if rest, ok := strings.CutPrefix(line, `request_latency_ms_bucket{path="/webhook",le="`); ok {
			buckets = append(buckets, rest[:strings.IndexByte(rest, '"')])
		}
	}
	if !slices.Equal(buckets, []string{"100", "500", "1000", "2000", "5000", "+Inf"}) {
		t.Errorf("buckets = %v", buckets)
	}
	for _, raw := range []string{"/nope", "/messages/", "919876543210"} {
		if strings.Contains(m, raw) {
			t.Errorf("metrics mention the raw URL part %q", raw)
		}
	}
	if ct := e.get(t, "/metrics").Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("metrics Content-Type = %q", ct)
	}
}

func TestTwoHandlersInOneProgram(t *testing.T) {
	a, b := newEnv(t), newEnv(t) // newEnv fails the test if New does
	a.seed(t, msg("m1", "+12", "2025-01-15T10:00:00Z", nil))
	wantMetric(t, a.metricsText(t), `webhook_requests_total{result="created"}`, 1)
	wantMetric(t, b.metricsText(t), `webhook_requests_total{result="created"}`, 0)

	t.Run("a shared registry is refused, not a panic", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := msgsvc.New(msgsvc.Config{Store: a.store, Registry: reg}); err != nil {
			t.Fatalf("first New: %v", err)
		}
		if _, err := msgsvc.New(msgsvc.Config{Store: a.store, Registry: reg}); err == nil {
			t.Error("second New on the same registry succeeded")
		}
	})
}

// --- logs -------------------------------------------------------------------------

func TestLogs(t *testing.T) {
	const secret = "SuperSecretValue-42"
	const text = "Very private words"
	const phone = "+919812345678"
	e := newEnv(t, func(c *msgsvc.Config) { c.Secret = secret; c.PreviousSecret = "PrevSecretValue-43" })
	b := body(t, map[string]any{"message_id": "log-1", "from": phone, "to": "+14155559999", "text": text})
	good := msgsvc.Sign([]byte(secret), b)
	badSig := msgsvc.Sign([]byte("nope"), b)

	type step struct {
		name   string
		req    *http.Request
		status int
		level  string
		result string // "" for non-webhook lines
		msgID  string
	}
	steps := []step{
		{"created", webhookRequest(t, b, "X-Signature", good, "X-Request-ID", "req-abc_123"), 200, "INFO", "created", "log-1"},
		{"duplicate", webhookRequest(t, b, "X-Hub-Signature-256", "sha256="+good), 200, "INFO", "duplicate", "log-1"},
		{"invalid signature", webhookRequest(t, b, "X-Signature", badSig), 401, "ERROR", "invalid_signature", ""},
		{"validation", webhookRequest(t, []byte(`{"text":"`+text+`","from":"`+phone+`"}`), "X-Signature", msgsvc.Sign([]byte(secret), []byte(`{"text":"`+text+`","from":"`+phone+`"}`))), 422, "WARN", "validation_error", ""},
		{"list", httptest.NewRequest(http.MethodGet, "/messages?from="+url.QueryEscape(phone)+"&q=private", nil), 200, "INFO", "", ""},
		{"list 422", httptest.NewRequest(http.MethodGet, "/messages?limit=0", nil), 422, "WARN", "", ""},
		{"not found", httptest.NewRequest(http.MethodGet, "/nowhere", nil), 404, "WARN", "", ""},
		{"not allowed", httptest.NewRequest(http.MethodPut, "/messages", nil), 405, "WARN", "", ""},
		{"live", httptest.NewRequest(http.MethodGet, "/health/live", nil), 200, "INFO", "", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(e.logLines(t))
			rec := e.serve(t, s.req)
			if rec.Code != s.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, s.status, rec.Body)
			}
			lines := e.logLines(t)
			if len(lines) != before+1 {
				t.Fatalf("%d log lines for one request", len(lines)-before)
			}
			l := lines[len(lines)-1]
			for _, k := range []string{"ts", "level", "request_id", "method", "path", "status", "latency_ms"} {
				if _, ok := l[k]; !ok {
					t.Errorf("log line lacks %q: %v", k, l)
				}
			}
			ts, _ := l["ts"].(string)
			if !strings.HasSuffix(ts, "Z") {
				t.Errorf("ts %q is not UTC", ts)
			} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("ts %q: %v", ts, err)
			}
			if l["level"] != s.level {
				t.Errorf("level = %v, want %s", l["level"], s.level)
			}
			wantPath := s.req.URL.Path
			if s.status == http.StatusNotFound {
				wantPath = "unmatched" // an unknown path is the client's text: never logged
			}
			if l["method"] != s.req.Method || l["path"] != wantPath || l["status"] != float64(s.status) {
				t.Errorf("method/path/status = %v %v %v", l["method"], l["path"], l["status"])
			}
			if _, ok := l["latency_ms"].(float64); !ok {
				t.Errorf("latency_ms = %v", l["latency_ms"])
			}
			if id := rec.Header().Get("X-Request-ID"); id == "" || l["request_id"] != id {
				t.Errorf("request_id %v, header %q", l["request_id"], id)
			}
			if s.result == "" {
				for _, k := range []string{"result", "dup", "message_id"} {
					if _, ok := l[k]; ok {
						t.Errorf("non-webhook line has %q", k)
					}
				}
				return
			}
			if l["result"] != s.result || l["dup"] != (s.result == "duplicate") {
				t.Errorf("result/dup = %v/%v", l["result"], l["dup"])
			}
			if got, _ := l["message_id"].(string); got != s.msgID {
				t.Errorf("message_id = %q, want %q", got, s.msgID)
			}
		})
	}
	if l := e.logLines(t)[0]; l["request_id"] != "req-abc_123" {
		t.Errorf("X-Request-ID not honoured: %v", l["request_id"])
	}
	all := e.logs.String()
	for _, secretish := range []string{secret, "PrevSecretValue-43", good, strings.ToUpper(good), badSig, text, "private", phone, "919812345678", "14155559999"} {
		if strings.Contains(all, secretish) {
			t.Errorf("logs contain %q:\n%s", secretish, all)
		}
	}
}

func TestLogLevelFilter(t *testing.T) {
	buf := &syncBuffer{}
	e := newEnv(t, func(c *msgsvc.Config) { c.Logger = msgsvc.NewLogger(buf, slog.LevelWarn) })
	e.get(t, "/health/live")
	e.get(t, "/nope")
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), `"level":"WARN"`) {
		t.Errorf("WARN logger wrote %q", buf)
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		name, in string
		kept     bool
	}{
		{"simple", "abc-123", true},
		{"one char", "x", true},
		{"128 chars", long, true},
		{"printable range", "!~" + "{}[]<>\"'\\", true},
		{"129 chars", long + "a", false},
		{"space", "abc 123", false},
		{"tab", "abc\t123", false},
		{"non-ASCII", "abcé", false},
		{"DEL", "abc\x7f", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/health/live", nil)
			if tc.in != "" {
				r.Header.Set("X-Request-ID", tc.in)
			}
			rec := e.serve(t, r)
			got := rec.Header().Get("X-Request-ID")
			if tc.kept && got != tc.in {
				t.Errorf("echoed %q, want %q", got, tc.in)
			}
			if !tc.kept && (got == tc.in || got == "" || len(got) > 128 || strings.ContainsAny(got, " \t")) {
				t.Errorf("invalid id %q answered with %q", tc.in, got)
			}
			if l := e.lastLog(t); l["request_id"] != got {
				t.Errorf("logged %v, header %q", l["request_id"], got)
			}
		})
	}
	a := e.get(t, "/health/live").Header().Get("X-Request-ID")
	b := e.get(t, "/health/live").Header().Get("X-Request-ID")
	if a == b {
		t.Errorf("two requests got the same new id %q", a)
	}
}

// --- health and store failures -----------------------------------------------------

func TestHealth(t *testing.T) {
	e := newEnv(t)
	wantOK(t, e.get(t, "/health/live"))
	wantOK(t, e.get(t, "/health/ready"))
	e.store.failPing(fmt.Errorf("%w: ping", msgsvc.ErrUnavailable))
	rec := e.get(t, "/health/ready")
	if rec.Code != 503 {
		t.Errorf("ready with a failing store: %d", rec.Code)
	}
	if l := e.lastLog(t); l["level"] != "ERROR" {
		t.Errorf("503 logged at %v", l["level"])
	}
	wantOK(t, e.get(t, "/health/live"))
	e.store.failPing(nil)
	wantOK(t, e.get(t, "/health/ready"))

	noSecret := newEnv(t, func(c *msgsvc.Config) { c.Secret = "" })
	wantDetail(t, noSecret.get(t, "/health/ready"), 503, "webhook secret not configured")
	wantOK(t, noSecret.get(t, "/health/live"))

	t.Run("a ping that hangs is cut at ReadyTimeout", func(t *testing.T) {
		h := newEnv(t, func(c *msgsvc.Config) { c.ReadyTimeout = 20 * time.Millisecond })
		h.store.hangPing.Store(true)
		start := time.Now()
		if rec := h.get(t, "/health/ready"); rec.Code != 503 {
			t.Errorf("status %d", rec.Code)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("ready took %v", d)
		}
	})
}

func TestStoreFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"unavailable", fmt.Errorf("wrapped: %w", msgsvc.ErrUnavailable), 503},
		{"closed", msgsvc.ErrClosed, 503},
		{"other", errStoreDown, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.store.failInsert(tc.err)
			rec := e.post(t, body(t, nil))
			if rec.Code != tc.status {
				t.Fatalf("webhook status %d, want %d", rec.Code, tc.status)
			}
			var d struct {
				Detail string `json:"detail"`
			}
			decodeJSON(t, rec, &d)
			if d.Detail == "" {
				t.Error("no detail")
			}
			l := e.lastLog(t)
			if l["result"] != "store_error" || l["level"] != "ERROR" {
				t.Errorf("log = %v", l)
			}
			wantMetric(t, e.metricsText(t), `webhook_requests_total{result="store_error"}`, 1)
			e.store.failInsert(nil)
			wantOK(t, e.post(t, body(t, nil))) // the retry is stored
			if n := e.total(t); n != 1 {
				t.Errorf("total %d", n)
			}

			e.store.failRead(tc.err)
			for _, path := range []string{"/messages", "/stats"} {
				rec := e.get(t, path)
				if rec.Code != tc.status {
					t.Errorf("%s: %d, want %d", path, rec.Code, tc.status)
				}
				decodeJSON(t, rec, &d)
			}
		})
	}
}

// --- routing ---------------------------------------------------------------------

func TestRouting(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", 404, ""},
		{"GET", "/", 404, ""},
		{"GET", "/messages/", 404, ""},
		{"GET", "/stats/", 404, ""},
		{"GET", "/Messages", 404, ""},
		{"POST", "//webhook", 404, ""},
		{"POST", "/a/../webhook", 404, ""},
		{"POST", "/./webhook", 404, ""},
		{"POST", "/webhook/", 404, ""},
		{"GET", "/health", 404, ""},
		{"GET", "/health/", 404, ""},
		{"GET", "/webhook", 405, "POST"},
		{"PUT", "/webhook", 405, "POST"},
		{"POST", "/messages", 405, "GET, HEAD"},
		{"DELETE", "/stats", 405, "GET, HEAD"},
		{"POST", "/health/live", 405, "GET, HEAD"},
		{"PATCH", "/health/ready", 405, "GET, HEAD"},
		{"POST", "/metrics", 405, "GET, HEAD"},
		{"OPTIONS", "/messages", 405, "GET, HEAD"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (Location %q)", resp.StatusCode, tc.status, resp.Header.Get("Location"))
			}
			want := `{"detail":"Not Found"}`
			if tc.status == 405 {
				want = `{"detail":"Method Not Allowed"}`
			}
			if string(b) != want {
				t.Errorf("body %s, want %s", b, want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
	t.Run("HEAD on GET routes", func(t *testing.T) {
		for _, p := range []string{"/messages", "/stats", "/health/live", "/health/ready", "/metrics"} {
			resp, err := client.Head(srv.URL + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("HEAD %s: %d", p, resp.StatusCode)
			}
		}
	})
	t.Run("JSON content type everywhere", func(t *testing.T) {
		for _, p := range []string{"/messages", "/messages?limit=0", "/stats", "/health/live", "/health/ready"} {
			if ct := e.get(t, p).Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", p, ct)
			}
		}
		for _, r := range []*http.Request{webhookRequest(t, nil), webhookRequest(t, []byte("{}"), "X-Signature", msgsvc.Sign([]byte(testSecret), []byte("{}")))} {
			if ct := e.serve(t, r).Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("webhook: Content-Type %q", ct)
			}
		}
	})
}

func TestVerifyHandshake(t *testing.T) {
	e := newEnv(t, func(c *msgsvc.Config) { c.VerifyToken = "tok" })
	rec := e.get(t, "/webhook?hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1158201444")
	if rec.Code != 200 || rec.Body.String() != "1158201444" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("handshake: %d %q %q", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
	for _, q := range []string{"hub.mode=subscribe&hub.verify_token=bad&hub.challenge=1", "hub.mode=unsubscribe&hub.verify_token=tok&hub.challenge=1", "", "hub.mode=subscribe&hub.challenge=1"} {
		if rec := e.get(t, "/webhook?"+q); rec.Code != 403 {
			t.Errorf("%q: %d, want 403", q, rec.Code)
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	if _, err := msgsvc.New(msgsvc.Config{}); !errors.Is(err, msgsvc.ErrNoStore) {
		t.Errorf("no store: %v", err)
	}
	st := &fakeStore{}
	if _, err := msgsvc.New(msgsvc.Config{Store: st, MaxBodyBytes: -1}); !errors.Is(err, msgsvc.ErrBadMaxBodyBytes) {
		t.Errorf("negative body: %v", err)
	}
	if _, err := msgsvc.New(msgsvc.Config{Store: st, ReadyTimeout: -1}); !errors.Is(err, msgsvc.ErrBadReadyTimeout) {
		t.Errorf("negative timeout: %v", err)
	}
}

// failingReader is a request body whose connection breaks.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func TestWebhookBodyReadError(t *testing.T) {
	e := newEnv(t)
	rec := e.serve(t, httptest.NewRequest(http.MethodPost, "/webhook", failingReader{}))
	// The contract names no status for a body that cannot be read; a 4xx
	// that is not 413 is what the handler gives, and nothing is stored.
	if rec.Code < 400 || rec.Code >= 500 || rec.Code == 413 {
		t.Fatalf("status %d", rec.Code)
	}
	var d struct {
		Detail string `json:"detail"`
	}
	decodeJSON(t, rec, &d)
	if l := e.lastLog(t); l["result"] != "validation_error" || l["level"] != "WARN" {
		t.Errorf("log = %v", l)
	}
	if n := e.total(t); n != 0 {
		t.Errorf("stored %d", n)
	}
}
