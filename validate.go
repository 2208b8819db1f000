package msgsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits from the contract's validation table.
const (
	// MaxMessageIDLen is the longest message_id, in code points.
	MaxMessageIDLen = 256
	// MaxTextLen is the longest text, in code points.
	MaxTextLen = 4096
)

// FieldError is one item of a FastAPI-style 422 body:
// {"loc": ["body", "from"], "msg": "...", "type": "..."}.
type FieldError struct {
	// Loc locates the failing input: "body" or "query", then field names
	// and array indexes.
	Loc []any `json:"loc"`
	// Msg is a human sentence.
	Msg string `json:"msg"`
	// Type is a machine code, as pydantic names them where one fits.
	Type string `json:"type"`
}

// ValidationError lists every failing field of one request. Its Detail is
// the body of a 422 answer.
type ValidationError struct {
	// Detail holds one item per failing field.
	Detail []FieldError `json:"detail"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Detail))
	for i, d := range e.Detail {
		parts[i] = fmt.Sprintf("%v: %s", d.Loc, d.Msg)
	}
	return "msgsvc: invalid input: " + strings.Join(parts, "; ")
}

// ErrValidation is matched by every *ValidationError through errors.Is.
var ErrValidation = errors.New("msgsvc: invalid input")

// Is reports whether target is ErrValidation.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

func (e *ValidationError) add(loc []any, typ, msg string) {
	e.Detail = append(e.Detail, FieldError{Loc: loc, Msg: msg, Type: typ})
}

func (e *ValidationError) orNil() error {
	if e == nil || len(e.Detail) == 0 {
		return nil
	}
	return e
}

// ParseMessage decodes and validates one webhook payload, the raw body as
// received. It returns a *ValidationError listing every failing field when
// the body is not valid JSON, not an object, or breaks a rule of the contract.
// Unknown fields are ignored; of a repeated key the last one counts.
func ParseMessage(body []byte) (Message, error) {
	var m Message
	if !utf8.Valid(body) {
		return m, &ValidationError{Detail: []FieldError{{
			Loc: []any{"body"}, Type: "json_invalid", Msg: "JSON decode error: body is not valid UTF-8",
		}}}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return m, &ValidationError{Detail: []FieldError{jsonError(body, err)}}
	}
	ve := &ValidationError{}
	loc := func(name string) []any { return []any{"body", name} }
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"message_id", &m.MessageID}, {"from", &m.From}, {"to", &m.To}, {"ts", &m.TS}} {
		if v, ok := stringField(ve, fields, f.name, loc, true); ok {
			*f.dst = v
			checkField(ve, loc, f.name, v)
		}
	}
	if text, ok := stringField(ve, fields, "text", loc, false); ok {
		m.Text = &text
		checkField(ve, loc, "text", text)
	}
	if err := ve.orNil(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// jsonError turns a decoding failure of the whole body into a field error.
func jsonError(body []byte, err error) FieldError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0: // checked first: encoding/json calls it a syntax error
		return FieldError{Loc: []any{"body"}, Type: "missing", Msg: "Field required"}
	case errors.As(err, &syn):
		return FieldError{Loc: []any{"body", syn.Offset}, Type: "json_invalid", Msg: "JSON decode error: " + syn.Error()}
	case errors.As(err, &typ), err == nil: // err == nil: the body was JSON null
		return FieldError{Loc: []any{"body"}, Type: "model_attributes_type",
			Msg: "Input should be a valid dictionary or object to extract fields from"}
	}
	return FieldError{Loc: []any{"body"}, Type: "json_invalid", Msg: "JSON decode error: " + err.Error()}
}

// stringField decodes fields[name] as a string. A missing or null value is
// ok=false; it is an error only when required.
func stringField(ve *ValidationError, fields map[string]json.RawMessage, name string, loc func(string) []any, required bool) (s string, ok bool) {
	raw, present := fields[name]
	if !present || string(raw) == "null" {
		if required && !present {
			ve.add(loc(name), "missing", "Field required")
		} else if required {
			ve.add(loc(name), "string_type", "Input should be a valid string")
		}
		return "", false
	}
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		ve.add(loc(name), "string_type", "Input should be a valid string")
		return "", false
	}
	return s, true
}

// ValidateMessage checks m against the contract's rules. loc builds the
// location of a field in the request; nil means ["body", field]. It returns
// a *ValidationError listing every failing field, or nil.
func ValidateMessage(m Message, loc func(field string) []any) error {
	if loc == nil {
		loc = func(name string) []any { return []any{"body", name} }
	}
	ve := &ValidationError{}
	validateInto(ve, m, loc)
	return ve.orNil()
}

func validateInto(ve *ValidationError, m Message, loc func(string) []any) {
	checkField(ve, loc, "message_id", m.MessageID)
	checkField(ve, loc, "from", m.From)
	checkField(ve, loc, "to", m.To)
	checkField(ve, loc, "ts", m.TS)
	if m.Text != nil {
		checkField(ve, loc, "text", *m.Text)
	}
}

// checkField applies the contract's rule for the named field to v.
func checkField(ve *ValidationError, loc func(string) []any, name, v string) {
	if hasNUL(v) {
		ve.add(loc(name), "string_nul", "String should not contain the NUL character (U+0000)")
		return
	}
	if !utf8.ValidString(v) { // only a Message built in Go can get here: JSON bodies are checked whole
		ve.add(loc(name), "string_unicode", "Input should be a valid string: it is not valid UTF-8")
		return
	}
	switch name {
	case "message_id":
		switch n := utf8.RuneCountInString(v); {
		case n < 1:
			ve.add(loc(name), "string_too_short", "String should have at least 1 character")
		case n > MaxMessageIDLen:
			ve.add(loc(name), "string_too_long", fmt.Sprintf("String should have at most %d characters", MaxMessageIDLen))
		}
	case "from", "to":
		if !IsE164(v) {
			ve.add(loc(name), "string_pattern_mismatch", `String should match pattern '^\+[1-9][0-9]{1,14}$'`)
		}
	case "ts":
		if _, err := ParseTimestamp(v); err != nil {
			ve.add(loc(name), "datetime_format", err.Error())
		}
	case "text":
		if utf8.RuneCountInString(v) > MaxTextLen {
			ve.add(loc(name), "string_too_long", fmt.Sprintf("String should have at most %d characters", MaxTextLen))
		}
	}
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// IsE164 reports whether s is "+" then 2 to 15 digits, the first not 0.
func IsE164(s string) bool {
	if len(s) < 3 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseTimestamp parses a message timestamp: YYYY-MM-DDTHH:MM:SS, an optional
// fraction of 1 to 9 digits, and an uppercase Z. The date must exist and the
// seconds run 00 to 59. Its error is a sentence fit for a 422 answer.
func ParseTimestamp(ts string) (time.Time, error) {
	t, rest, err := parseDateTime(ts)
	switch {
	case err != nil:
	case ts[10] != 'T':
		err = errors.New("the date and time must be separated by an uppercase T")
	case rest != "Z":
		err = errors.New("must end in an uppercase Z (UTC)")
	}
	if err != nil {
		// The message is shown to clients as a pydantic-style sentence.
		//lint:ignore ST1005 a 422 "msg" starts with a capital, as FastAPI's do
		return time.Time{}, fmt.Errorf("Input should be a UTC timestamp like 2025-01-15T10:00:00Z: %w", err)
	}
	return t, nil
}

// parseSince parses the `since` query parameter: RFC 3339 with any offset.
// A space where the offset's sign belongs is read as "+", because an
// unencoded "+" in a query string arrives as a space.
func parseSince(s string) (time.Time, error) {
	t, rest, err := parseDateTime(s)
	if err != nil {
		return time.Time{}, err
	}
	if rest == "Z" || rest == "z" {
		return t, nil
	}
	if len(rest) != 6 || (rest[0] != '+' && rest[0] != '-' && rest[0] != ' ') || rest[3] != ':' {
		return time.Time{}, errors.New("must end in Z or an offset like +05:30")
	}
	hh, ok1 := digits(rest[1:3])
	mm, ok2 := digits(rest[4:6])
	if !ok1 || !ok2 || hh > 23 || mm > 59 {
		return time.Time{}, errors.New("offset out of range")
	}
	off := time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute
	if rest[0] == '-' {
		off = -off
	}
	return t.Add(-off), nil
}

// parseDateTime parses "YYYY-MM-DDTHH:MM:SS[.fraction]" and returns what
// follows it.
func parseDateTime(s string) (t time.Time, rest string, err error) {
	const layout = "YYYY-MM-DDTHH:MM:SS"
	if len(s) < len(layout) {
		return t, "", errors.New("too short")
	}
	if s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return t, "", errors.New("not in the form YYYY-MM-DDTHH:MM:SS")
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return t, "", errors.New("not in the form YYYY-MM-DDTHH:MM:SS")
	}
	switch {
	case year < 1:
		return t, "", errors.New("year out of range 0001-9999")
	case month < 1 || month > 12:
		return t, "", errors.New("month out of range")
	case day < 1 || day > daysIn(year, month):
		return t, "", errors.New("day out of range for the month")
	case hour > 23:
		return t, "", errors.New("hour out of range")
	case minute > 59:
		return t, "", errors.New("minute out of range")
	case sec > 59:
		return t, "", errors.New("second out of range")
	}
	rest = s[19:]
	nanos := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		frac := rest[1:n]
		if len(frac) < 1 || len(frac) > 9 {
			return t, "", errors.New("fraction must have 1 to 9 digits")
		}
		for i := 0; i < 9; i++ {
			nanos *= 10
			if i < len(frac) {
				nanos += int(frac[i] - '0')
			}
		}
		rest = rest[n:]
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nanos, time.UTC), rest, nil
}

func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// instantKeyLayout is fixed width, so keys sort in time order as strings.
const instantKeyLayout = "2006-01-02T15:04:05.000000000Z"

// InstantKey returns a fixed-width UTC key for t that sorts as t does, for
// every instant a timestamp or a `since` bound can name: instants before year
// 1 sort before every message, instants after year 9999 after every message.
func InstantKey(t time.Time) string {
	t = t.UTC()
	if t.Year() > 9999 {
		return "9999-99" // greater than any key of year 9999
	}
	if t.Year() < 0 {
		return "0000" // smaller than any key of year 1
	}
	return t.Format(instantKeyLayout)
}

// TimestampKey returns InstantKey of a valid message timestamp. It works on
// the text alone, without a time.Time round trip.
func TimestampKey(ts string) string {
	// ts is YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z, validated.
	var b [30]byte
	copy(b[:], ts[:19])
	b[10] = 'T' // RFC 3339 allows a lowercase "t"; the key must not depend on it
	b[19] = '.'
	frac := ""
	if len(ts) > 20 && ts[19] == '.' {
		frac = ts[20 : len(ts)-1]
	}
	for i := 0; i < 9; i++ {
		if i < len(frac) {
			b[20+i] = frac[i]
		} else {
			b[20+i] = '0'
		}
	}
	b[29] = 'Z'
	return string(b[:])
}
