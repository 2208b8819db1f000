package msgsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// WhatsAppObject is the top-level "object" of a WhatsApp Cloud API webhook
// delivery. A signed webhook body carrying it is read as a delivery of
// messages rather than as one message.
const WhatsAppObject = "whatsapp_business_account"

// Bounds of a delivery's Unix-seconds timestamp: the instants a message
// timestamp can name, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
// Typed, so that 32-bit targets, where they overflow an int, build.
const (
	minUnixSeconds int64 = -62135596800
	maxUnixSeconds int64 = 253402300799
)

// Placeholders stand in for a field that already failed in the delivery's own
// terms, so that the contract's rules report only the other fields. A message
// holding one is never stored: its delivery is refused.
const (
	placeholderID    = "-"
	placeholderPhone = "+10"
	placeholderTS    = "1970-01-01T00:00:00Z"
)

// phoneMsg explains the rule for a number in a delivery, where Meta writes
// the digits without the "+" of E.164.
const phoneMsg = "String should be a phone number: 2 to 15 digits, the first not 0, " +
	"optionally after a + and with spaces, hyphens, dots or parentheses between them"

// IsWhatsAppDelivery reports whether body, a raw webhook body, is a WhatsApp
// Cloud API delivery: valid UTF-8 JSON, an object whose "object" member is the
// string "whatsapp_business_account" (of a repeated key, the last counts).
// Anything else, invalid JSON included, is read as one plain message.
func IsWhatsAppDelivery(body []byte) bool {
	_, ok := deliveryFields(body)
	return ok
}

// ParseWhatsAppDelivery maps a WhatsApp Cloud API delivery to the messages it
// carries, in document order: each entry[].changes[].value.messages[] item
// becomes a Message with MessageID = id, From = "+" and the digits of from,
// To = "+" and the digits of value.metadata.display_phone_number, TS = the
// Unix-seconds timestamp (a JSON string or number) as YYYY-MM-DDTHH:MM:SSZ,
// and Text = text.body for a text message, the caption of a media message
// (image, video, document, audio, sticker) when it has one, nil otherwise.
//
// A delivery without messages (only statuses, say) returns no messages and no
// error. Otherwise it returns every message or none: a *ValidationError lists
// every malformed part and every mapped field that breaks a rule of
// ValidateMessage, each located in the delivery with Meta's field names, for
// example ["body", "entry", 0, "changes", 0, "value", "messages", 1, "from"].
// A body that is not a delivery (see IsWhatsAppDelivery) is refused with a
// single item located at ["body", "object"].
func ParseWhatsAppDelivery(body []byte) ([]Message, error) {
	fields, ok := deliveryFields(body)
	if !ok {
		return nil, &ValidationError{Detail: []FieldError{{
			Loc: []any{"body", "object"}, Type: "literal_error",
			Msg: "Input should be a JSON object whose object is '" + WhatsAppObject + "'",
		}}}
	}
	return parseDelivery(fields)
}

// deliveryFields returns the top-level members of body when it is a
// WhatsApp Cloud API delivery.
func deliveryFields(body []byte) (map[string]json.RawMessage, bool) {
	// Cheap refusal of plain messages: the key and the value are spelled
	// either literally or with a \u escape.
	if !bytes.Contains(body, []byte(`\u`)) &&
		(!bytes.Contains(body, []byte("object")) || !bytes.Contains(body, []byte(WhatsAppObject))) {
		return nil, false
	}
	if !utf8.Valid(body) {
		return nil, false
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return nil, false
	}
	raw := fields["object"]
	var object string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &object) != nil || object != WhatsAppObject {
		return nil, false
	}
	return fields, true
}

// serveDelivery stores the messages of a signed WhatsApp Cloud API delivery
// in one Store.Insert call, or refuses the whole delivery with 422.
func (h *Handler) serveDelivery(w http.ResponseWriter, r *http.Request, fields map[string]json.RawMessage, rl *requestLog) {
	msgs, err := parseDelivery(fields)
	if err != nil {
		rl.result = ResultValidationError
		writeValidation(w, err)
		return
	}
	rl.delivery, rl.messages = true, len(msgs)
	if len(msgs) == 0 {
		rl.result = ResultIgnored
		writeRaw(w, http.StatusOK, okBody)
		return
	}
	rl.messageID = msgs[0].MessageID
	h.insert(w, r, msgs, rl)
}

// deliveryParser walks one delivery, gathering its messages and every error.
type deliveryParser struct {
	ve   ValidationError
	msgs []Message
}

// at returns base followed by more, never sharing base's array.
func at(base []any, more ...any) []any {
	return append(slices.Clip(base), more...)
}

// parseDelivery maps the top-level members of a delivery; see
// ParseWhatsAppDelivery.
func parseDelivery(fields map[string]json.RawMessage) ([]Message, error) {
	p := &deliveryParser{}
	body := []any{"body"}
	entries, _ := p.array(fields, "entry", body, true)
	for i, raw := range entries {
		eloc := at(body, "entry", i)
		entry, ok := p.object(raw, eloc)
		if !ok {
			continue
		}
		changes, _ := p.array(entry, "changes", eloc, true)
		for j, raw := range changes {
			cloc := at(eloc, "changes", j)
			change, ok := p.object(raw, cloc)
			if !ok {
				continue
			}
			if value, ok := p.member(change, "value", cloc); ok {
				p.value(value, at(cloc, "value"))
			}
		}
	}
	p.dedupe()
	if err := p.ve.orNil(); err != nil {
		return nil, err
	}
	return p.msgs, nil
}

// value maps the messages of one change's value. Everything else in it
// (statuses, contacts, errors) is ignored.
func (p *deliveryParser) value(v map[string]json.RawMessage, loc []any) {
	msgs, _ := p.array(v, "messages", loc, false)
	if len(msgs) == 0 {
		return
	}
	to, toLoc := p.recipient(v, loc)
	for k, raw := range msgs {
		p.message(raw, at(loc, "messages", k), to, toLoc)
	}
}

// recipient returns the business number of a change, from
// metadata.display_phone_number, and its location. A failure is reported
// once, and the placeholder returned.
func (p *deliveryParser) recipient(v map[string]json.RawMessage, loc []any) (string, []any) {
	mloc := at(loc, "metadata")
	toLoc := at(mloc, "display_phone_number")
	meta, ok := p.member(v, "metadata", loc)
	if !ok {
		return placeholderPhone, toLoc
	}
	s, ok := stringField(&p.ve, meta, "display_phone_number", func(n string) []any { return at(mloc, n) }, true)
	if !ok {
		return placeholderPhone, toLoc
	}
	to, ok := p.phone(s, toLoc)
	if !ok {
		return placeholderPhone, toLoc
	}
	return to, toLoc
}

// message maps one item of value.messages and checks it against the
// contract's rules.
func (p *deliveryParser) message(raw json.RawMessage, loc []any, to string, toLoc []any) {
	fields, ok := p.object(raw, loc)
	if !ok {
		return
	}
	first := len(p.ve.Detail)
	defer p.sortFrom(first, loc)
	fieldLoc := func(n string) []any { return at(loc, n) }
	m := Message{MessageID: placeholderID, From: placeholderPhone, To: to, TS: placeholderTS}
	if id, ok := stringField(&p.ve, fields, "id", fieldLoc, true); ok {
		m.MessageID = id
	}
	if from, ok := stringField(&p.ve, fields, "from", fieldLoc, true); ok {
		if from, ok := p.phone(from, at(loc, "from")); ok {
			m.From = from
		}
	}
	if ts, ok := p.timestamp(fields, loc); ok {
		m.TS = ts
	}
	text, textLoc := p.text(fields, loc)
	m.Text = text

	err := ValidateMessage(m, func(field string) []any {
		switch field {
		case "message_id":
			return at(loc, "id")
		case "to":
			return toLoc
		case "ts":
			return at(loc, "timestamp")
		case "text":
			return textLoc
		}
		return at(loc, field) // "from" keeps its name
	})
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, d := range ve.Detail {
			if d.Type == "string_pattern_mismatch" { // from or to: say it in Meta's terms
				d.Msg = phoneMsg
			}
			p.ve.Detail = append(p.ve.Detail, d)
		}
	}
	p.msgs = append(p.msgs, m)
}

// fieldRank orders the failures of one message as Meta orders its fields.
var fieldRank = map[string]int{"id": 0, "from": 1, "timestamp": 3, "type": 4}

// sortFrom sorts the failures from index first on, those of the message at
// loc, by field: id, from, the business number, timestamp, type, text.
func (p *deliveryParser) sortFrom(first int, loc []any) {
	rank := func(d FieldError) int {
		if len(d.Loc) <= len(loc) || !slices.Equal(d.Loc[:len(loc)], loc) {
			return 2 // metadata.display_phone_number, outside the message
		}
		if name, ok := d.Loc[len(loc)].(string); ok {
			if r, ok := fieldRank[name]; ok {
				return r
			}
		}
		return 5 // the text's object
	}
	slices.SortStableFunc(p.ve.Detail[first:], func(a, b FieldError) int { return rank(a) - rank(b) })
}

// timestamp maps the message's Unix-seconds timestamp, a JSON string or
// number holding an integer, to YYYY-MM-DDTHH:MM:SSZ.
func (p *deliveryParser) timestamp(fields map[string]json.RawMessage, loc []any) (string, bool) {
	tloc := at(loc, "timestamp")
	raw, present := fields["timestamp"]
	if !present {
		p.ve.add(tloc, "missing", "Field required")
		return "", false
	}
	digits := string(raw)
	if raw[0] == '"' {
		if json.Unmarshal(raw, &digits) != nil {
			digits = "" // cannot happen: the body is valid JSON
		}
	} else if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		p.ve.add(tloc, "int_type", "Input should be Unix seconds: a whole number, as a JSON string or number")
		return "", false
	}
	sec, err := parseUnixSeconds(digits)
	switch {
	case errors.Is(err, strconv.ErrSyntax):
		p.ve.add(tloc, "int_parsing", "Input should be Unix seconds: a whole number, as a JSON string or number")
		return "", false
	case sec < minUnixSeconds: // ParseInt saturates on overflow, so ErrRange lands here or below
		p.ve.add(tloc, "greater_than_equal", fmt.Sprintf("Input should be greater than or equal to %d (0001-01-01T00:00:00Z)", minUnixSeconds))
		return "", false
	case sec > maxUnixSeconds:
		p.ve.add(tloc, "less_than_equal", fmt.Sprintf("Input should be less than or equal to %d (9999-12-31T23:59:59Z)", maxUnixSeconds))
		return "", false
	}
	return time.Unix(sec, 0).UTC().Format("2006-01-02T15:04:05Z"), true
}

// parseUnixSeconds parses an optional "-" then decimal digits. Its error
// wraps strconv.ErrSyntax or strconv.ErrRange.
func parseUnixSeconds(s string) (int64, error) {
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if digits == "" {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// mediaTypes are the message types whose object may carry a caption.
var mediaTypes = map[string]bool{"image": true, "video": true, "document": true, "audio": true, "sticker": true}

// text returns the message's text and where it comes from: text.body for a
// text message, <type>.caption for media, nil for other types and when the
// field is absent or null.
func (p *deliveryParser) text(fields map[string]json.RawMessage, loc []any) (*string, []any) {
	typ, _ := stringField(&p.ve, fields, "type", func(n string) []any { return at(loc, n) }, false)
	container, key := typ, "caption"
	switch {
	case typ == "text":
		key = "body"
	case !mediaTypes[typ]:
		return nil, at(loc, "type")
	}
	cloc := at(loc, container)
	raw, present := fields[container]
	if !present || string(raw) == "null" {
		return nil, at(cloc, key)
	}
	obj, ok := p.object(raw, cloc)
	if !ok {
		return nil, at(cloc, key)
	}
	s, ok := stringField(&p.ve, obj, key, func(n string) []any { return at(cloc, n) }, false)
	if !ok {
		return nil, at(cloc, key)
	}
	return &s, at(cloc, key)
}

// phone turns a number as Meta writes it into "+" and its digits. A leading
// "+" and the separators space, hyphen, dot and parentheses are dropped; any
// other character is an error. Whether the result is E.164 is left to
// ValidateMessage.
func (p *deliveryParser) phone(s string, loc []any) (string, bool) {
	b := make([]byte, 1, len(s)+1)
	b[0] = '+'
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			b = append(b, c)
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || (c == '+' && i == 0):
		default:
			p.ve.add(loc, "string_pattern_mismatch", phoneMsg)
			return "", false
		}
	}
	return string(b), true
}

// array returns fields[name] as a JSON array. An absent or null member is an
// error only when required.
func (p *deliveryParser) array(fields map[string]json.RawMessage, name string, loc []any, required bool) ([]json.RawMessage, bool) {
	raw, present := fields[name]
	switch {
	case !present && required:
		p.ve.add(at(loc, name), "missing", "Field required")
		return nil, false
	case !present || (string(raw) == "null" && !required):
		return nil, true
	case raw[0] != '[':
		p.ve.add(at(loc, name), "list_type", "Input should be a valid list")
		return nil, false
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, false // cannot happen: the body is valid JSON
	}
	return items, true
}

// member returns the required object fields[name].
func (p *deliveryParser) member(fields map[string]json.RawMessage, name string, loc []any) (map[string]json.RawMessage, bool) {
	raw, present := fields[name]
	if !present {
		p.ve.add(at(loc, name), "missing", "Field required")
		return nil, false
	}
	return p.object(raw, at(loc, name))
}

// object decodes raw as a JSON object; of a repeated key the last counts.
func (p *deliveryParser) object(raw json.RawMessage, loc []any) (map[string]json.RawMessage, bool) {
	var fields map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &fields) != nil {
		p.ve.add(loc, "model_attributes_type", "Input should be a valid dictionary or object to extract fields from")
		return nil, false
	}
	return fields, true
}

// dedupe drops repeats of one failure: every message of a change reports a
// bad display_phone_number at the same place.
func (p *deliveryParser) dedupe() {
	if len(p.ve.Detail) < 2 {
		return
	}
	seen := make(map[string]bool, len(p.ve.Detail))
	kept := p.ve.Detail[:0]
	for _, d := range p.ve.Detail {
		key := fmt.Sprintf("%s %#v", d.Type, d.Loc)
		if !seen[key] {
			seen[key] = true
			kept = append(kept, d)
		}
	}
	p.ve.Detail = kept
}
