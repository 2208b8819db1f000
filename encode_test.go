package msgsvc

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestAppendListResponseDecodes checks the hand-written encoder against
// encoding/json: what it writes is valid JSON that decodes to the value
// encoded, for every kind of character a string can hold.
func TestAppendListResponseDecodes(t *testing.T) {
	text := "tab\t nl\n cr\r quote\" back\\ slash/ <html>&amp; \x00\x01\x1f\x7f é 😀 \u2028\u2029 end"
	cursor := "MTIwMjU"
	for _, r := range []listResponse{
		{Data: []Message{}, Total: 0, Limit: 50},
		{Data: []Message{{MessageID: "m1", From: "+12", To: "+34", TS: "2025-01-15T10:00:00Z"}}, Total: 1, Limit: 1, Offset: 7, NextCursor: &cursor},
		{Data: []Message{{MessageID: text, From: "+12", To: "+34", TS: "2025-01-15T10:00:00.5Z", Text: &text}}, Total: 1 << 40, Limit: 100},
	} {
		checkEncoding(t, r)
	}
}

func checkEncoding(t *testing.T, r listResponse) {
	t.Helper()
	got := appendListResponse(nil, &r)
	if !json.Valid(got) {
		t.Fatalf("invalid JSON: %s", got)
	}
	var back listResponse
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(r)
	var viaStd listResponse
	_ = json.Unmarshal(want, &viaStd)
	if !reflect.DeepEqual(back, viaStd) {
		t.Errorf("decoded %+v, want %+v\n got %s\nwant %s", back, viaStd, got, want)
	}
}

// FuzzAppendString checks that any string, valid UTF-8 or not, encodes to a
// JSON string that decodes as encoding/json's own encoding does.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\\n\t\x00", "é😀", "\xff\xfe", "\u2028", strings.Repeat("a", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, got, err)
		}
		std, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(std, &want)
		if back != want {
			t.Fatalf("%q: decoded %q, encoding/json gives %q", s, back, want)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("valid %q came back as %q", s, back)
		}
	})
}
