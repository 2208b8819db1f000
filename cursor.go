package msgsvc

import (
	"encoding/base64"
	"errors"
	"time"
	"unicode/utf8"
)

// cursorVersion prefixes every cursor, so the format can change later while
// old cursors are still recognised (and refused clearly).
const cursorVersion = '1'

// EncodeCursor returns the opaque next_cursor string for a position.
func EncodeCursor(p Position) string {
	raw := make([]byte, 0, 1+len(p.Key)+len(p.MessageID))
	raw = append(raw, cursorVersion)
	raw = append(raw, p.Key...)
	raw = append(raw, p.MessageID...)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// ErrBadCursor is returned by DecodeCursor for anything EncodeCursor did not
// make.
var ErrBadCursor = errors.New("msgsvc: malformed cursor")

// DecodeCursor parses a cursor made by EncodeCursor. It checks the shape
// only: a cursor names a position, and any position is a valid place to
// continue from.
func DecodeCursor(s string) (Position, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	keyLen := len(instantKeyLayout)
	if err != nil || len(raw) < 2+keyLen || raw[0] != cursorVersion {
		return Position{}, ErrBadCursor
	}
	key, id := string(raw[1:1+keyLen]), string(raw[1+keyLen:])
	if _, err := time.Parse(instantKeyLayout, key); err != nil {
		return Position{}, ErrBadCursor
	}
	if !utf8.ValidString(id) || utf8.RuneCountInString(id) > MaxMessageIDLen || hasNUL(id) {
		return Position{}, ErrBadCursor
	}
	return Position{Key: key, MessageID: id}, nil
}
