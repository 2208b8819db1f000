package msgsvc

import (
	"strconv"
	"unicode/utf8"
)

// The answers of GET /messages are the hot read path; they are appended by
// hand instead of through reflection. A test checks that every encoding
// decodes, with encoding/json, to exactly the value encoded.

// appendListResponse appends the JSON of a GET /messages answer to b.
func appendListResponse(b []byte, r *listResponse) []byte {
	b = append(b, `{"data":[`...)
	for i := range r.Data {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMessage(b, &r.Data[i])
	}
	b = append(b, `],"total":`...)
	b = strconv.AppendInt(b, r.Total, 10)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(r.Limit), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, int64(r.Offset), 10)
	b = append(b, `,"next_cursor":`...)
	b = appendNullableString(b, r.NextCursor)
	return append(b, '}')
}

// appendMessage appends one message object to b.
func appendMessage(b []byte, m *Message) []byte {
	b = append(b, `{"message_id":`...)
	b = appendString(b, m.MessageID)
	b = append(b, `,"from":`...)
	b = appendString(b, m.From)
	b = append(b, `,"to":`...)
	b = appendString(b, m.To)
	b = append(b, `,"ts":`...)
	b = appendString(b, m.TS)
	b = append(b, `,"text":`...)
	b = appendNullableString(b, m.Text)
	return append(b, '}')
}

func appendNullableString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendString(b, *s)
}

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, U+2028 and U+2029 escaped for JavaScript, and invalid
// UTF-8 replaced by U+FFFD, as encoding/json does.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
