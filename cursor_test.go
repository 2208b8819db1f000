package msgsvc_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []msgsvc.Position{
		{Key: msgsvc.TimestampKey("2025-01-15T10:00:00Z"), MessageID: "m1"},
		{Key: msgsvc.TimestampKey("0001-01-01T00:00:00Z"), MessageID: "é😀"},
		{Key: msgsvc.TimestampKey("9999-12-31T23:59:59.999999999Z"), MessageID: strings.Repeat("é", 256)},
		{Key: msgsvc.TimestampKey("2025-01-15T10:00:00.5Z"), MessageID: "with space/and+plus=="},
	} {
		c := msgsvc.EncodeCursor(p)
		if strings.ContainsAny(c, "+/= ") {
			t.Errorf("cursor %q needs URL escaping", c)
		}
		got, err := msgsvc.DecodeCursor(c)
		if err != nil || got != p {
			t.Errorf("DecodeCursor(EncodeCursor(%+v)) = %+v, %v", p, got, err)
		}
	}
}

func TestDecodeCursorMalformed(t *testing.T) {
	key := msgsvc.TimestampKey("2025-01-15T10:00:00Z")
	enc := func(raw string) string { return base64.RawURLEncoding.EncodeToString([]byte(raw)) }
	for name, c := range map[string]string{
		"empty":            "",
		"not base64":       "!!!!",
		"std alphabet":     base64.StdEncoding.EncodeToString([]byte("1" + key + "a/?>")),
		"padded":           base64.URLEncoding.EncodeToString([]byte("1" + key + "m")),
		"wrong version":    enc("2" + key + "m1"),
		"no id":            enc("1" + key),
		"short key":        enc("1" + key[:29]),
		"bad key":          enc("1" + strings.Replace(key, "01-15", "02-30", 1) + "m1"),
		"key not a time":   enc("1" + strings.Repeat("x", 30) + "m1"),
		"id too long":      enc("1" + key + strings.Repeat("i", 257)),
		"id with NUL":      enc("1" + key + "a\x00"),
		"id not UTF-8":     enc("1" + key + "\xff"),
		"garbage":          "abc",
		"plain message id": "m1",
	} {
		t.Run(name, func(t *testing.T) {
			if p, err := msgsvc.DecodeCursor(c); !errors.Is(err, msgsvc.ErrBadCursor) {
				t.Errorf("DecodeCursor(%q) = %+v, %v", c, p, err)
			}
		})
	}
}
