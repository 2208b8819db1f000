package msgsvc_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// detailLocs renders the locs of a *ValidationError.
func detailLocs(tb testing.TB, err error) []string {
	tb.Helper()
	var ve *msgsvc.ValidationError
	if !errors.As(err, &ve) {
		tb.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	if !errors.Is(err, msgsvc.ErrValidation) {
		tb.Errorf("errors.Is(%v, ErrValidation) is false", err)
	}
	out := make([]string, len(ve.Detail))
	for i, d := range ve.Detail {
		if d.Msg == "" || d.Type == "" {
			tb.Errorf("incomplete item %+v", d)
		}
		parts := make([]string, len(d.Loc))
		for j, p := range d.Loc {
			switch v := p.(type) {
			case string:
				parts[j] = v
			default:
				parts[j] = "#"
			}
		}
		out[i] = strings.Join(parts, ".")
	}
	return out
}

func TestParseMessageFields(t *testing.T) {
	for _, tc := range fieldCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := msgsvc.ParseMessage(body(t, map[string]any{tc.field: tc.value}))
			if tc.ok {
				if err != nil {
					t.Fatalf("ParseMessage: %v", err)
				}
				if err := msgsvc.ValidateMessage(m, nil); err != nil {
					t.Errorf("accepted message does not validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %+v", m)
			}
			if got := detailLocs(t, err); !slices.Equal(got, []string{"body." + tc.field}) {
				t.Errorf("locs = %v", got)
			}
			if m != (msgsvc.Message{}) {
				t.Errorf("a refused payload returned %+v", m)
			}
		})
	}
}

func TestParseMessageWrongTypes(t *testing.T) {
	for _, field := range []string{"message_id", "from", "to", "ts", "text"} {
		for _, wt := range wrongTypes {
			t.Run(field+" "+wt.name, func(t *testing.T) {
				_, err := msgsvc.ParseMessage(body(t, map[string]any{field: wt.value}))
				if got := detailLocs(t, err); !slices.Equal(got, []string{"body." + field}) {
					t.Errorf("locs = %v", got)
				}
			})
		}
	}
}

func TestParseMessageValues(t *testing.T) {
	m, err := msgsvc.ParseMessage([]byte(`{"ts":"2025-01-15T10:00:00.1Z","to":"+14155550100","from":"+919876543210","message_id":"m\u00e9","text":null,"x":[1,{}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := msgsvc.Message{MessageID: "mé", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00.1Z"}
	if m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	m, err = msgsvc.ParseMessage(body(t, map[string]any{"text": ""}))
	if err != nil || m.Text == nil || *m.Text != "" {
		t.Errorf("empty text: %+v %v", m, err)
	}
}

func TestParseMessageWholeBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		loc  string
	}{
		{"empty", "", "body"},
		{"whitespace", " \r\n\t", "body"},
		{"array", `[]`, "body"},
		{"string", `"x"`, "body"},
		{"number", `1`, "body"},
		{"null", `null`, "body"},
		{"bad UTF-8", "{\"message_id\":\"\xff\"}", "body"},
		{"syntax", `{"a":}`, "body.#"},
		{"trailing", `{} {}`, "body.#"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := msgsvc.ParseMessage([]byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			got := detailLocs(t, err)
			if len(got) != 1 || got[0] != tc.loc {
				t.Errorf("locs = %v, want [%s]", got, tc.loc)
			}
			var ve *msgsvc.ValidationError
			errors.As(err, &ve)
			if empty := strings.TrimSpace(tc.body) == ""; empty != (ve.Detail[0].Type == "missing") {
				t.Errorf("type = %q for body %q", ve.Detail[0].Type, tc.body)
			}
		})
	}
}

func TestValidateMessageCustomLoc(t *testing.T) {
	m := msgsvc.Message{MessageID: "", From: "+1", To: "+12", TS: "2025-01-15T10:00:00Z", Text: ptr(strings.Repeat("x", 4097))}
	err := msgsvc.ValidateMessage(m, func(f string) []any { return []any{"body", "entry", 0, f} })
	if got := detailLocs(t, err); !slices.Equal(got, []string{"body.entry.#.message_id", "body.entry.#.from", "body.entry.#.text"}) {
		t.Errorf("locs = %v", got)
	}
	bad := msg("\xff", "+12", "2025-01-15T10:00:00Z", ptr("a\xc3"))
	if got := detailLocs(t, msgsvc.ValidateMessage(bad, nil)); !slices.Equal(got, []string{"body.message_id", "body.text"}) {
		t.Errorf("invalid UTF-8: locs = %v", got)
	}
	if err := msgsvc.ValidateMessage(msg("ok", "+12", "2025-01-15T10:00:00Z", nil), nil); err != nil {
		t.Errorf("valid message: %v", err)
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, err := msgsvc.ParseMessage([]byte(`{"message_id":"","from":"+1","to":"+12","ts":"2025-01-15T10:00:00Z"}`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"message_id", "from", "msgsvc: invalid input"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Error() = %q lacks %q", err, want)
		}
	}
}

func TestIsE164(t *testing.T) {
	for s, want := range map[string]bool{
		"+12": true, "+919876543210": true, "+123456789012345": true, "+9": false,
		"+1": false, "+": false, "": false, "+1234567890123456": false, "+0123": false,
		"12": false, "+1a": false, "+1 2": false, "-12": false, "+12\n": false, "＋12": false,
	} {
		if got := msgsvc.IsE164(s); got != want {
			t.Errorf("IsE164(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2025-01-15T10:00:00Z", time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)},
		{"2025-01-15T10:00:00.5Z", time.Date(2025, 1, 15, 10, 0, 0, 500_000_000, time.UTC)},
		{"2025-01-15T10:00:00.000000001Z", time.Date(2025, 1, 15, 10, 0, 0, 1, time.UTC)},
		{"0001-01-01T00:00:00Z", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"9999-12-31T23:59:59.999999999Z", time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)},
		{"2000-02-29T12:00:00Z", time.Date(2000, 2, 29, 12, 0, 0, 0, time.UTC)},
	} {
		got, err := msgsvc.ParseTimestamp(tc.in)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range fieldCases() {
		if tc.field != "ts" || tc.ok || tc.value == absent {
			continue
		}
		if _, err := msgsvc.ParseTimestamp(tc.value.(string)); err == nil {
			t.Errorf("ParseTimestamp(%q) accepted", tc.value)
		}
	}
}

func TestTimestampKeyMatchesInstantKey(t *testing.T) {
	tss := []string{
		"2025-01-15T10:00:00Z", "2025-01-15T10:00:00.5Z", "2025-01-15T10:00:00.50Z",
		"2025-01-15T10:00:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9Z",
		"2025-01-15t10:00:00Z",
	}
	for _, ts := range tss {
		tm, err := msgsvc.ParseTimestamp(ts)
		if err != nil {
			continue // a form the parser refuses has no key
		}
		if got, want := msgsvc.TimestampKey(ts), msgsvc.InstantKey(tm); got != want {
			t.Errorf("TimestampKey(%q) = %q, InstantKey = %q", ts, got, want)
		}
	}
	// Keys sort as instants do, including the out-of-range bounds of since.
	keys := []string{
		msgsvc.InstantKey(time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC)),
		msgsvc.InstantKey(time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)),
		msgsvc.TimestampKey("0001-01-01T00:00:00Z"),
		msgsvc.TimestampKey("2025-01-15T10:00:00Z"),
		msgsvc.TimestampKey("2025-01-15T10:00:00.5Z"),
		msgsvc.TimestampKey("9999-12-31T23:59:59.999999999Z"),
		msgsvc.InstantKey(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
	if keys[1] > keys[2] || keys[0] > keys[2] {
		t.Errorf("keys before year 1 do not sort first: %q", keys)
	}
	if !slices.IsSorted(keys[2:]) {
		t.Errorf("keys not sorted: %q", keys[2:])
	}
	if ist := msgsvc.InstantKey(time.Date(2025, 1, 15, 15, 30, 0, 0, time.FixedZone("IST", 19800))); ist != msgsvc.TimestampKey("2025-01-15T10:00:00Z") {
		t.Errorf("InstantKey ignores the zone: %q", ist)
	}
}

func TestParseQuery(t *testing.T) {
	ten := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	cursor := msgsvc.EncodeCursor(msgsvc.Position{Key: "2025-01-15T10:00:00.000000000Z", MessageID: "m1"})
	for _, tc := range []struct {
		raw  string
		want msgsvc.Query
	}{
		{"", msgsvc.Query{Limit: 50}},
		{"limit=1&offset=0", msgsvc.Query{Limit: 1}},
		{"limit=100&offset=7", msgsvc.Query{Limit: 100, Offset: 7}},
		{"from=+919876543210", msgsvc.Query{Limit: 50, From: "+919876543210"}},
		{"from=%2B919876543210", msgsvc.Query{Limit: 50, From: "+919876543210"}},
		{"since=2025-01-15T15:30:00+05:30", msgsvc.Query{Limit: 50, Since: &ten}},
		{"since=2025-01-15T15:30:00%2B05:30", msgsvc.Query{Limit: 50, Since: &ten}},
		{"since=2025-01-15T04:30:00-05:30", msgsvc.Query{Limit: 50, Since: &ten}},
		{"since=2025-01-15T10:00:00Z", msgsvc.Query{Limit: 50, Since: &ten}},
		{"q=+a+", msgsvc.Query{Limit: 50, Text: " a "}},
		{"q=%25_%5C", msgsvc.Query{Limit: 50, Text: `%_\`}},
		{"from=&since=&q=&cursor=", msgsvc.Query{Limit: 50}},
		{"cursor=" + cursor, msgsvc.Query{Limit: 50, After: &msgsvc.Position{Key: "2025-01-15T10:00:00.000000000Z", MessageID: "m1"}}},
		{"unknown=1&limit=2", msgsvc.Query{Limit: 2}},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := msgsvc.ParseQuery(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if (got.Since == nil) != (tc.want.Since == nil) || (got.Since != nil && !got.Since.Equal(*tc.want.Since)) {
				t.Errorf("Since = %v, want %v", got.Since, tc.want.Since)
			}
			if (got.After == nil) != (tc.want.After == nil) || (got.After != nil && *got.After != *tc.want.After) {
				t.Errorf("After = %v, want %v", got.After, tc.want.After)
			}
			got.Since, got.After, tc.want.Since, tc.want.After = nil, nil, nil, nil
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, raw := range []string{"limit=0", "offset=-1", "since=x", "cursor=x", "cursor=" + cursor + "&offset=2", "q=%zz"} {
		if _, err := msgsvc.ParseQuery(raw); err == nil {
			t.Errorf("ParseQuery(%q) accepted", raw)
		} else {
			for _, l := range detailLocs(t, err) {
				if !strings.HasPrefix(l, "query") {
					t.Errorf("%q: loc %q", raw, l)
				}
			}
		}
	}
}
