package msgsvc_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/msgsvc/msgsvc"
)

// FuzzParseMessage checks that ParseMessage never panics, that what it
// accepts re-validates and survives a JSON round trip, and that what it
// refuses is a *ValidationError located in the body.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"Hello"}`,
		`{"message_id":"m1","from":"+12","to":"+999999999999999","ts":"2024-02-29T23:59:59.123456789Z","text":null}`,
		`{"message_id":"\u00e9","from":"+12","to":"+13","ts":"2025-01-15t10:00:00Z"}`,
		`{"message_id":"","from":"+1","to":"0","ts":"2025-02-30T00:00:00Z","text":1}`,
		`{"message_id":"a","message_id":"b","from":"+12","to":"+13","ts":"0001-01-01T00:00:00Z"}`,
		`{"message_id":"\u0000","from":"+12","to":"+13","ts":"2025-01-15T10:00:00.Z"}`,
		`[]`, `null`, `"x"`, ``, `{} x`, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := msgsvc.ParseMessage(body)
		if err != nil {
			var ve *msgsvc.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, msgsvc.ErrValidation) || len(ve.Detail) == 0 {
				t.Fatalf("error %v is not a non-empty *ValidationError", err)
			}
			for _, d := range ve.Detail {
				if len(d.Loc) == 0 || d.Loc[0] != "body" || d.Msg == "" || d.Type == "" {
					t.Fatalf("bad item %+v", d)
				}
			}
			if m != (msgsvc.Message{}) {
				t.Fatalf("refused body returned %+v", m)
			}
			return
		}
		if err := msgsvc.ValidateMessage(m, nil); err != nil {
			t.Fatalf("accepted %+v does not re-validate: %v", m, err)
		}
		tm, err := msgsvc.ParseTimestamp(m.TS)
		if err != nil {
			t.Fatalf("accepted ts %q: %v", m.TS, err)
		}
		if got, want := msgsvc.TimestampKey(m.TS), msgsvc.InstantKey(tm); got != want {
			t.Fatalf("TimestampKey(%q) = %q, InstantKey = %q", m.TS, got, want)
		}
		if !utf8.ValidString(m.MessageID) || (m.Text != nil && !utf8.ValidString(*m.Text)) {
			t.Fatalf("accepted invalid UTF-8: %+v", m)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := msgsvc.ParseMessage(again)
		if err != nil || !equalMessage(m, m2) {
			t.Fatalf("round trip of %+v gave %+v, %v", m, m2, err)
		}
	})
}

// FuzzVerify checks signature header parsing: a correct signature in any
// accepted spelling verifies, and anything that verifies is the correct
// digest.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"message_id":"m1"}`), []byte("secret"), "", uint8(0))
	f.Add([]byte(""), []byte("k"), "sha256=", uint8(1))
	f.Add([]byte("x"), []byte(""), "SHA256=", uint8(2))
	f.Add([]byte("body"), []byte("s"), "sha256=00", uint8(3))
	f.Add([]byte("body"), []byte("s"), strings.Repeat("A", 64), uint8(4))
	f.Fuzz(func(t *testing.T, body, secret []byte, value string, mode uint8) {
		want := msgsvc.Sign(secret, body)
		if len(secret) == 0 {
			err := msgsvc.Verify(header("X-Signature", want), body, secret)
			if !errors.Is(err, msgsvc.ErrNoSecret) {
				t.Fatalf("empty secret: %v", err)
			}
			return
		}
		// A correct signature in every accepted spelling verifies.
		good := []http.Header{
			header("X-Signature", want),
			header("X-Signature", strings.ToUpper(want)),
			header("X-Signature", "sha256="+want),
			header("X-Signature", "SHA256="+strings.ToUpper(want)),
			header("X-Hub-Signature-256", "sha256="+want),
			header("X-Signature", value, "X-Hub-Signature-256", "Sha256="+want),
		}
		for _, h := range good {
			if err := msgsvc.Verify(h, body, []byte("other"), secret); err != nil {
				t.Fatalf("Verify(%v) = %v", h, err)
			}
		}
		// An arbitrary value verifies only if it spells the correct digest.
		name := "X-Signature"
		if mode%2 == 1 {
			name = "X-Hub-Signature-256"
		}
		err := msgsvc.Verify(header(name, value), body, secret)
		digits := value
		if len(digits) >= 7 && strings.EqualFold(digits[:7], "sha256=") {
			digits = digits[7:]
		}
		spells := strings.EqualFold(digits, want) && (name == "X-Signature" || len(digits) != len(value))
		switch {
		case err == nil && !spells:
			t.Fatalf("%s: %q verified but is not the digest %s", name, value, want)
		case err != nil && spells:
			t.Fatalf("%s: %q is the digest but Verify = %v", name, value, err)
		case err != nil && !errors.Is(err, msgsvc.ErrMalformedSignature) && !errors.Is(err, msgsvc.ErrInvalidSignature):
			t.Fatalf("Verify = %v", err)
		}
	})
}

// FuzzParseQuery checks that ParseQuery never panics and that what it
// accepts is in bounds.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "limit=10&offset=5", "limit=0", "limit=101", "offset=-1", "limit=&offset=",
		"from=+919876543210", "from=%2B919876543210", "since=2025-01-15T15:30:00+05:30",
		"since=2025-01-15T10:00:00Z", "since=bad", "q=%C3%89COLE", "q=%25_%5C", "q=%ff",
		"cursor=MTIwMjUtMDEtMTVUMTA6MDA6MDAuMDAwMDAwMDAwWm0x", "cursor=MTIwMjUtMDEtMTVUMTA6MDA6MDAuMDAwMDAwMDAwWm0x&offset=1",
		"a;b", "%zz", "limit=1&limit=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := msgsvc.ParseQuery(raw)
		if err != nil {
			var ve *msgsvc.ValidationError
			if !errors.As(err, &ve) || len(ve.Detail) == 0 {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			for _, d := range ve.Detail {
				if len(d.Loc) == 0 || d.Loc[0] != "query" {
					t.Fatalf("loc %v", d.Loc)
				}
			}
			return
		}
		if q.Limit < 1 || q.Limit > msgsvc.MaxLimit || q.Offset < 0 {
			t.Fatalf("out of bounds: %+v", q)
		}
		if q.After != nil && q.Offset != 0 {
			t.Fatalf("cursor with offset: %+v", q)
		}
		if !utf8.ValidString(q.From) || !utf8.ValidString(q.Text) {
			t.Fatalf("invalid UTF-8 accepted: %+v", q)
		}
		if strings.HasPrefix(q.From, " ") {
			t.Fatalf("from kept its leading space: %q", q.From)
		}
		if q.After != nil {
			if _, err := msgsvc.DecodeCursor(msgsvc.EncodeCursor(*q.After)); err != nil {
				t.Fatalf("accepted cursor does not re-encode: %v", err)
			}
		}
	})
}

// FuzzDecodeCursor checks that DecodeCursor never panics, that what it
// accepts round-trips, and that every position of a valid message
// round-trips.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(msgsvc.EncodeCursor(msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:00Z"), MessageID: "m1"}), "2025-01-15T10:00:00Z", "m1")
	f.Add("", "2025-01-15T10:00:00.5Z", "é😀")
	f.Add("!!!", "0001-01-01T00:00:00Z", "x")
	f.Add("MjAyNQ", "bad", "")
	f.Fuzz(func(t *testing.T, s, ts, id string) {
		if p, err := msgsvc.DecodeCursor(s); err == nil {
			p2, err := msgsvc.DecodeCursor(msgsvc.EncodeCursor(p))
			if err != nil || p2 != p {
				t.Fatalf("re-encoding %+v gave %+v, %v", p, p2, err)
			}
			if len(p.Key) != len(msgsvc.TimestampKey("2025-01-15T10:00:00Z")) || p.MessageID == "" {
				t.Fatalf("accepted odd position %+v", p)
			}
		} else if !errors.Is(err, msgsvc.ErrBadCursor) {
			t.Fatalf("error %v is not ErrBadCursor", err)
		}
		m := msgsvc.Message{MessageID: id, From: "+12", To: "+13", TS: ts}
		if msgsvc.ValidateMessage(m, nil) != nil {
			return
		}
		p := msgsvc.Position{Key: msgsvc.TimestampKey(ts), MessageID: id}
		got, err := msgsvc.DecodeCursor(msgsvc.EncodeCursor(p))
		if err != nil || got != p {
			t.Fatalf("round trip of %+v gave %+v, %v", p, got, err)
		}
	})
}

// FuzzHandler drives the whole handler with arbitrary bodies and headers: it
// must never panic, never answer 5xx (the store does not fail here), always
// answer JSON, and answer 200 exactly for correctly signed valid payloads:
// valid messages, and valid WhatsApp Cloud API deliveries.
func FuzzHandler(f *testing.F) {
	e := newEnv(f, func(c *msgsvc.Config) {
		c.MaxBodyBytes = 4096
		c.Logger = msgsvc.NewLogger(&bytes.Buffer{}, nil)
	})
	f.Add([]byte(`{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"Hello"}`), uint8(0), "application/json", "req-1", "")
	f.Add([]byte(`{"message_id":"m2","from":"+12","to":"+13","ts":"2025-01-15T10:00:00.5Z"}`), uint8(1), "application/x-www-form-urlencoded", "", "")
	f.Add([]byte(`{"message_id":1}`), uint8(0), "", "has space", "")
	f.Add([]byte(`not json`), uint8(2), "text/plain", "", "sha256=00")
	f.Add([]byte(`{}`), uint8(3), "", "", "")
	f.Add(bytes.Repeat([]byte("x"), 5000), uint8(0), "", "", "")
	f.Add([]byte(`{"message_id":"m3","from":"+12","to":"+13","ts":"2025-01-15T10:00:00Z"}`), uint8(4), "", "", "")
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, contentType, requestID, sigValue string) {
		sig := msgsvc.Sign([]byte(testSecret), body)
		signed := true
		r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		if requestID != "" {
			r.Header.Set("X-Request-ID", requestID)
		}
		switch mode % 5 {
		case 0:
			r.Header.Set("X-Signature", sig)
		case 1:
			r.Header.Set("X-Hub-Signature-256", "sha256="+strings.ToUpper(sig))
		case 2:
			r.Header.Set("X-Signature", sigValue)
			signed = strings.EqualFold(strings.TrimPrefix(strings.ToLower(sigValue), "sha256="), sig)
		case 3:
			signed = false
		case 4:
			r.Header.Set("X-Hub-Signature-256", sigValue)
			r.Header.Set("X-Signature", sig)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, r)

		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer is not JSON: %q %q", ct, rec.Body)
		}
		id := rec.Header().Get("X-Request-ID")
		if id == "" || (validRequestIDForTest(requestID) && id != requestID) {
			t.Fatalf("request id %q for %q", id, requestID)
		}
		_, perr := msgsvc.ParseMessage(body)
		if msgsvc.IsWhatsAppDelivery(body) {
			_, perr = msgsvc.ParseWhatsAppDelivery(body)
		}
		want := http.StatusOK
		switch {
		case len(body) > 4096:
			want = http.StatusRequestEntityTooLarge
		case !signed:
			want = http.StatusUnauthorized
		case perr != nil:
			want = http.StatusUnprocessableEntity
		}
		if rec.Code != want {
			t.Fatalf("status %d, want %d: %s", rec.Code, want, rec.Body)
		}
	})
}

func validRequestIDForTest(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
