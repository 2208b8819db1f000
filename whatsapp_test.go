package msgsvc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// readDelivery returns a sample delivery from testdata/whatsapp.
func readDelivery(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "whatsapp", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// postHub serves POST /webhook with body signed by the env's secret in
// X-Hub-Signature-256, as Meta signs its deliveries.
func (e *env) postHub(tb testing.TB, body []byte) *httptest.ResponseRecorder {
	tb.Helper()
	sig := "sha256=" + msgsvc.Sign([]byte(e.secret), body)
	return e.serve(tb, webhookRequest(tb, body, msgsvc.HubSignatureHeader, sig))
}

// all returns every stored message in list order.
func (e *env) all(tb testing.TB) []msgsvc.Message {
	tb.Helper()
	var out []msgsvc.Message
	for off := 0; ; off += msgsvc.MaxLimit {
		p, err := e.store.Store.List(context.Background(), msgsvc.Query{Limit: msgsvc.MaxLimit, Offset: off})
		if err != nil {
			tb.Fatalf("List: %v", err)
		}
		out = append(out, p.Messages...)
		if len(p.Messages) < msgsvc.MaxLimit {
			return out
		}
	}
}

// webhookLog returns the last log line of a POST /webhook.
func (e *env) webhookLog(tb testing.TB) map[string]any {
	tb.Helper()
	lines := e.logLines(tb)
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i]["path"] == "/webhook" && lines[i]["method"] == http.MethodPost {
			return lines[i]
		}
	}
	tb.Fatal("no POST /webhook log line")
	return nil
}

// wantMessages compares stored messages with want, in list order.
func wantMessages(tb testing.TB, got, want []msgsvc.Message) {
	tb.Helper()
	if !slices.EqualFunc(got, want, equalMessage) {
		tb.Errorf("stored:\n%s\nwant:\n%s", dumpMessages(got), dumpMessages(want))
	}
}

func dumpMessages(msgs []msgsvc.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		text := "<nil>"
		if m.Text != nil {
			text = "\"" + *m.Text + "\""
		}
		b.WriteString("  " + m.MessageID + " " + m.From + " -> " + m.To + " " + m.TS + " " + text + "\n")
	}
	return b.String()
}

const (
	metaSender   = "+16505551234"
	metaBusiness = "+15550783881"
)

func TestWhatsAppDeliveries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		file     string
		want     []msgsvc.Message // in list order
		result   string
		logID    string // message_id of the log line: the first message of the delivery
		messages int
	}{
		{
			name: "text", file: "text.json", result: msgsvc.ResultCreated, messages: 1,
			logID: "wamid.HBgLMTY1MDUwNTUxMjM0FQIAEhgUM0E0QTY1OTlBRUUwMzgxMDE0NEYA",
			want: []msgsvc.Message{{
				MessageID: "wamid.HBgLMTY1MDUwNTUxMjM0FQIAEhgUM0E0QTY1OTlBRUUwMzgxMDE0NEYA",
				From:      metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z", Text: ptr("Does it come in another color?"),
			}},
		},
		{
			name: "image with caption", file: "image_caption.json", result: msgsvc.ResultCreated, messages: 1,
			logID: "wamid.HBgLMTY1MDUwNTUxMjM0FQIAEhgUM0E0QTY1OTlBRUUwMzgxMDE0NEYB",
			want: []msgsvc.Message{{
				MessageID: "wamid.HBgLMTY1MDUwNTUxMjM0FQIAEhgUM0E0QTY1OTlBRUUwMzgxMDE0NEYB",
				From:      metaSender, To: metaBusiness, TS: "2025-06-08T21:01:40Z", Text: ptr("Like this one, in blue"),
			}},
		},
		{
			name: "several messages, numeric timestamp, audio without caption", file: "several_messages.json",
			result: msgsvc.ResultCreated, messages: 3, logID: "wamid.several.1",
			want: []msgsvc.Message{
				{MessageID: "wamid.several.1", From: metaSender, To: metaBusiness, TS: "2025-06-08T21:03:20Z", Text: ptr("First")},
				{MessageID: "wamid.several.2", From: "+34612345678", To: metaBusiness, TS: "2025-06-08T21:03:21Z", Text: ptr("The invoice")},
				{MessageID: "wamid.several.3", From: metaSender, To: metaBusiness, TS: "2025-06-08T21:03:22Z"},
			},
		},
		{
			name: "several entries and changes, statuses beside messages", file: "several_entries.json",
			result: msgsvc.ResultCreated, messages: 3, logID: "wamid.entries.1",
			want: []msgsvc.Message{
				{MessageID: "wamid.entries.1", From: metaSender, To: metaBusiness, TS: "2025-06-08T21:05:00Z", Text: ptr("To the first business")},
				{MessageID: "wamid.entries.2", From: "+919876543210", To: "+447700900123", TS: "2025-06-08T21:05:02Z", Text: ptr("Unboxing")},
				{MessageID: "wamid.entries.3", From: "+919876543210", To: "+447700900123", TS: "2025-06-08T21:05:03Z"},
			},
		},
		{
			name: "unknown types have null text", file: "unknown_type.json",
			result: msgsvc.ResultCreated, messages: 2, logID: "wamid.location.1",
			want: []msgsvc.Message{
				{MessageID: "wamid.location.1", From: metaSender, To: metaBusiness, TS: "2025-06-08T21:08:20Z"},
				{MessageID: "wamid.unsupported.1", From: metaSender, To: metaBusiness, TS: "2025-06-08T21:08:21Z"},
			},
		},
		{
			name: "statuses only", file: "statuses_only.json", result: msgsvc.ResultIgnored, messages: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := readDelivery(t, tc.file)
			if !msgsvc.IsWhatsAppDelivery(b) {
				t.Fatal("IsWhatsAppDelivery = false")
			}
			wantOK(t, e.postHub(t, b))
			wantMessages(t, e.all(t), tc.want)

			// The library function maps the same messages, in document order.
			parsed, err := msgsvc.ParseWhatsAppDelivery(b)
			if err != nil || len(parsed) != len(tc.want) {
				t.Errorf("ParseWhatsAppDelivery: %d messages, %v", len(parsed), err)
			}

			metrics := e.metricsText(t)
			for _, r := range []string{msgsvc.ResultCreated, msgsvc.ResultDuplicate, msgsvc.ResultIgnored, msgsvc.ResultValidationError} {
				want := 0.0
				if r == tc.result {
					want = 1
				}
				wantMetric(t, metrics, `webhook_requests_total{result="`+r+`"}`, want)
			}
			wantMetric(t, metrics, `http_requests_total{path="/webhook",status="200"}`, 1)

			l := e.logLines(t)[0]
			if l["result"] != tc.result || l["dup"] != false || l["level"] != "INFO" || l["status"] != float64(200) {
				t.Errorf("log line %v", l)
			}
			if l["messages"] != float64(tc.messages) {
				t.Errorf("log messages = %v, want %d", l["messages"], tc.messages)
			}
			if got, ok := l["message_id"]; tc.logID == "" && ok || tc.logID != "" && got != tc.logID {
				t.Errorf("log message_id = %v, want %q", got, tc.logID)
			}
			logs := e.logs.String()
			for _, private := range []string{"16505551234", "15550783881", "34612345678", "919876543210", "447700900123", "color", "invoice", "Unboxing"} {
				if strings.Contains(logs, private) {
					t.Errorf("logs contain %q: %s", private, logs)
				}
			}
		})
	}
}

// metaMessage is a valid text message as Meta writes it, with fields replaced;
// a value of absent removes the field.
func metaMessage(tb testing.TB, fields map[string]any) string {
	tb.Helper()
	m := map[string]any{
		"from":      "16505551234",
		"id":        "wamid.t1",
		"timestamp": "1749416383",
		"type":      "text",
		"text":      map[string]any{"body": "Hello"},
	}
	for k, v := range fields {
		if v == absent {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

const metaMetadata = `"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}`

// metaValue is a change's value holding messages, given as JSON.
func metaValue(messages ...string) string {
	return `{` + metaMetadata + `,"messages":[` + strings.Join(messages, ",") + `]}`
}

// metaDelivery is a delivery of one entry holding one change per value, each
// given as JSON.
func metaDelivery(values ...string) []byte {
	changes := make([]string, len(values))
	for i, v := range values {
		changes[i] = `{"value":` + v + `,"field":"messages"}`
	}
	return metaEntries(`{"id":"102290129340398","changes":[` + strings.Join(changes, ",") + `]}`)
}

// metaEntries is a delivery holding the given entries, as JSON.
func metaEntries(entries ...string) []byte {
	return []byte(`{"object":"whatsapp_business_account","entry":[` + strings.Join(entries, ",") + `]}`)
}

func TestWhatsAppRefused(t *testing.T) {
	const msgs = "body.entry.0.changes.0.value.messages."
	const meta = "body.entry.0.changes.0.value.metadata"
	m := func(fields map[string]any) string { return metaMessage(t, fields) }
	ok := m(nil)
	for _, tc := range []struct {
		name  string
		body  []byte
		locs  []string
		types []string // the type of each item, when checked
	}{
		{"second message's from starts with 0", readDelivery(t, "invalid_second_from.json"),
			[]string{msgs + "1.from"}, []string{"string_pattern_mismatch"}},
		{"entry missing", []byte(`{"object":"whatsapp_business_account"}`), []string{"body.entry"}, []string{"missing"}},
		{"entry null", []byte(`{"object":"whatsapp_business_account","entry":null}`), []string{"body.entry"}, []string{"list_type"}},
		{"entry not an array", []byte(`{"object":"whatsapp_business_account","entry":{"id":"1"}}`), []string{"body.entry"}, []string{"list_type"}},
		{"entry item not an object", metaEntries(`"x"`, `[]`), []string{"body.entry.0", "body.entry.1"}, []string{"model_attributes_type", "model_attributes_type"}},
		{"changes missing", metaEntries(`{"id":"1"}`), []string{"body.entry.0.changes"}, []string{"missing"}},
		{"changes not an array", metaEntries(`{"id":"1","changes":"x"}`), []string{"body.entry.0.changes"}, []string{"list_type"}},
		{"change not an object", metaEntries(`{"id":"1","changes":[7]}`), []string{"body.entry.0.changes.0"}, []string{"model_attributes_type"}},
		{"value missing", metaEntries(`{"id":"1","changes":[{"field":"messages"}]}`), []string{"body.entry.0.changes.0.value"}, []string{"missing"}},
		{"value not an object", metaDelivery(`[]`), []string{"body.entry.0.changes.0.value"}, []string{"model_attributes_type"}},
		{"messages not an array", metaDelivery(`{` + metaMetadata + `,"messages":{}}`), []string{"body.entry.0.changes.0.value.messages"}, []string{"list_type"}},
		{"message not an object", metaDelivery(metaValue(ok, `null`)), []string{msgs + "1"}, []string{"model_attributes_type"}},
		{"metadata missing", metaDelivery(`{"messages":[` + ok + `]}`), []string{"body.entry.0.changes.0.value.metadata"}, []string{"missing"}},
		{"metadata not an object", metaDelivery(`{"metadata":"15550783881","messages":[` + ok + `]}`), []string{meta}, []string{"model_attributes_type"}},
		{"display_phone_number missing", metaDelivery(`{"metadata":{"phone_number_id":"1"},"messages":[` + ok + `]}`), []string{meta + ".display_phone_number"}, []string{"missing"}},
		{"display_phone_number a number", metaDelivery(`{"metadata":{"display_phone_number":15550783881},"messages":[` + ok + `]}`), []string{meta + ".display_phone_number"}, []string{"string_type"}},
		{"display_phone_number with letters", metaDelivery(`{"metadata":{"display_phone_number":"1-800-FLOWERS"},"messages":[` + ok + `]}`), []string{meta + ".display_phone_number"}, []string{"string_pattern_mismatch"}},
		{"display_phone_number too short, reported once for two messages",
			metaDelivery(`{"metadata":{"display_phone_number":"1"},"messages":[` + ok + `,` + m(map[string]any{"id": "wamid.t2"}) + `]}`),
			[]string{meta + ".display_phone_number"}, []string{"string_pattern_mismatch"}},
		{"id missing", metaDelivery(metaValue(m(map[string]any{"id": absent}))), []string{msgs + "0.id"}, []string{"missing"}},
		{"id empty", metaDelivery(metaValue(m(map[string]any{"id": ""}))), []string{msgs + "0.id"}, []string{"string_too_short"}},
		{"id a number", metaDelivery(metaValue(m(map[string]any{"id": 12}))), []string{msgs + "0.id"}, []string{"string_type"}},
		{"id too long", metaDelivery(metaValue(m(map[string]any{"id": strings.Repeat("é", 257)}))), []string{msgs + "0.id"}, []string{"string_too_long"}},
		{"from missing", metaDelivery(metaValue(m(map[string]any{"from": absent}))), []string{msgs + "0.from"}, []string{"missing"}},
		{"from null", metaDelivery(metaValue(m(map[string]any{"from": nil}))), []string{msgs + "0.from"}, []string{"string_type"}},
		{"from too long", metaDelivery(metaValue(m(map[string]any{"from": "1234567890123456"}))), []string{msgs + "0.from"}, []string{"string_pattern_mismatch"}},
		{"from with letters", metaDelivery(metaValue(m(map[string]any{"from": "1650555abcd"}))), []string{msgs + "0.from"}, []string{"string_pattern_mismatch"}},
		{"timestamp missing", metaDelivery(metaValue(m(map[string]any{"timestamp": absent}))), []string{msgs + "0.timestamp"}, []string{"missing"}},
		{"timestamp a bool", metaDelivery(metaValue(m(map[string]any{"timestamp": true}))), []string{msgs + "0.timestamp"}, []string{"int_type"}},
		{"timestamp not digits", metaDelivery(metaValue(m(map[string]any{"timestamp": "2025-06-08T20:59:43Z"}))), []string{msgs + "0.timestamp"}, []string{"int_parsing"}},
		{"timestamp empty", metaDelivery(metaValue(m(map[string]any{"timestamp": ""}))), []string{msgs + "0.timestamp"}, []string{"int_parsing"}},
		{"timestamp with a fraction", metaDelivery(metaValue(m(map[string]any{"timestamp": 1749416383.5}))), []string{msgs + "0.timestamp"}, []string{"int_parsing"}},
		{"timestamp after year 9999", metaDelivery(metaValue(m(map[string]any{"timestamp": "253402300800"}))), []string{msgs + "0.timestamp"}, []string{"less_than_equal"}},
		{"timestamp before year 1", metaDelivery(metaValue(m(map[string]any{"timestamp": int64(-62135596801)}))), []string{msgs + "0.timestamp"}, []string{"greater_than_equal"}},
		{"timestamp overflows int64", metaDelivery(metaValue(m(map[string]any{"timestamp": "99999999999999999999"}))), []string{msgs + "0.timestamp"}, []string{"less_than_equal"}},
		{"type a number", metaDelivery(metaValue(m(map[string]any{"type": 1}))), []string{msgs + "0.type"}, []string{"string_type"}},
		{"text not an object", metaDelivery(metaValue(m(map[string]any{"text": "Hello"}))), []string{msgs + "0.text"}, []string{"model_attributes_type"}},
		{"text body a number", metaDelivery(metaValue(m(map[string]any{"text": map[string]any{"body": 1}}))), []string{msgs + "0.text.body"}, []string{"string_type"}},
		{"text body with NUL", metaDelivery(metaValue(m(map[string]any{"text": map[string]any{"body": "a\x00b"}}))), []string{msgs + "0.text.body"}, []string{"string_nul"}},
		{"text body too long", metaDelivery(metaValue(m(map[string]any{"text": map[string]any{"body": strings.Repeat("€", 4097)}}))), []string{msgs + "0.text.body"}, []string{"string_too_long"}},
		{"image caption a number", metaDelivery(metaValue(m(map[string]any{"type": "image", "image": map[string]any{"caption": 3}}))), []string{msgs + "0.image.caption"}, []string{"string_type"}},
		{"image not an object", metaDelivery(metaValue(m(map[string]any{"type": "image", "image": []any{}}))), []string{msgs + "0.image"}, []string{"model_attributes_type"}},
		{"every field of a message at once",
			metaDelivery(metaValue(ok, m(map[string]any{"id": "", "from": "0", "timestamp": "soon", "text": map[string]any{"body": "\x00"}}))),
			[]string{msgs + "1.id", msgs + "1.from", msgs + "1.timestamp", msgs + "1.text.body"}, nil},
		{"every field, the business number too: in Meta's order",
			metaDelivery(`{"metadata":{"display_phone_number":"0"},"messages":[` + m(map[string]any{"id": "", "from": "x", "timestamp": "soon", "type": "image", "image": map[string]any{"caption": false}}) + `]}`),
			[]string{msgs + "0.id", msgs + "0.from", meta + ".display_phone_number", msgs + "0.timestamp", msgs + "0.image.caption"},
			[]string{"string_too_short", "string_pattern_mismatch", "string_pattern_mismatch", "int_parsing", "string_type"}},
		{"failures in several entries and changes",
			metaEntries(
				`{"id":"1","changes":[{"value":`+metaValue(ok)+`},{"value":`+metaValue(m(map[string]any{"from": "+"}))+`}]}`,
				`{"id":"2","changes":[{"value":`+metaValue(m(map[string]any{"id": "wamid.t3", "timestamp": nil}))+`}]}`),
			[]string{"body.entry.0.changes.1.value.messages.0.from", "body.entry.1.changes.0.value.messages.0.timestamp"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			items := want422(t, e.postHub(t, tc.body))
			if got := locs(items); !slices.Equal(got, tc.locs) {
				t.Errorf("locs = %q, want %q\n%+v", got, tc.locs, items)
			}
			if tc.types != nil {
				for i, it := range items {
					if i < len(tc.types) && it.Type != tc.types[i] {
						t.Errorf("item %d type = %q, want %q (%s)", i, it.Type, tc.types[i], it.Msg)
					}
				}
			}
			if n := e.total(t); n != 0 {
				t.Errorf("%d messages stored from a refused delivery", n)
			}
			_, err := msgsvc.ParseWhatsAppDelivery(tc.body)
			var ve *msgsvc.ValidationError
			if !errors.As(err, &ve) || len(ve.Detail) != len(items) {
				t.Errorf("ParseWhatsAppDelivery = %v, want the same %d items", err, len(items))
			}
			wantMetric(t, e.metricsText(t), `webhook_requests_total{result="validation_error"}`, 1)
			l := e.webhookLog(t)
			if l["result"] != msgsvc.ResultValidationError || l["level"] != "WARN" || l["dup"] != false {
				t.Errorf("log line %v", l)
			}
			for _, k := range []string{"message_id", "messages"} {
				if _, ok := l[k]; ok {
					t.Errorf("log line of a refused delivery has %q: %v", k, l)
				}
			}
		})
	}
}

func TestWhatsAppLenientMapping(t *testing.T) {
	m := func(fields map[string]any) string { return metaMessage(t, fields) }
	for _, tc := range []struct {
		name string
		body []byte
		want msgsvc.Message
	}{
		{"formatted display_phone_number",
			metaDelivery(`{"metadata":{"display_phone_number":"+1 (555) 078-3881"},"messages":[` + m(nil) + `]}`),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z", Text: ptr("Hello")}},
		{"from with a leading +",
			metaDelivery(metaValue(m(map[string]any{"from": "+16505551234"}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z", Text: ptr("Hello")}},
		{"numeric timestamp, year 1 and 9999 bounds",
			metaDelivery(metaValue(m(map[string]any{"timestamp": int64(253402300799)}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "9999-12-31T23:59:59Z", Text: ptr("Hello")}},
		{"negative timestamp",
			metaDelivery(metaValue(m(map[string]any{"timestamp": "-62135596800"}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "0001-01-01T00:00:00Z", Text: ptr("Hello")}},
		{"text without body", metaDelivery(metaValue(m(map[string]any{"text": map[string]any{}}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z"}},
		{"text null", metaDelivery(metaValue(m(map[string]any{"text": nil}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z"}},
		{"type missing", metaDelivery(metaValue(m(map[string]any{"type": absent}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z"}},
		{"empty text body kept", metaDelivery(metaValue(m(map[string]any{"text": map[string]any{"body": ""}}))),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z", Text: ptr("")}},
		{"unknown fields and repeated keys: the last counts",
			metaDelivery(`{"metadata":{"display_phone_number":"1","display_phone_number":"15550783881"},"extra":[1,2],"messages":[{"id":"a","id":"wamid.t1","from":"16505551234","timestamp":"1749416383","type":"reaction","reaction":{"emoji":"👍","message_id":"wamid.x"},"text":{"body":"ignored: not a text message"}}]}`),
			msgsvc.Message{MessageID: "wamid.t1", From: metaSender, To: metaBusiness, TS: "2025-06-08T20:59:43Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			wantOK(t, e.postHub(t, tc.body))
			wantMessages(t, e.all(t), []msgsvc.Message{tc.want})
		})
	}
}

func TestWhatsAppIgnored(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"statuses only", readDelivery(t, "statuses_only.json")},
		{"no entries", metaEntries()},
		{"no changes", metaEntries(`{"id":"1","changes":[]}`)},
		{"empty messages, metadata not needed", metaDelivery(`{"messages":[]}`)},
		{"null messages", metaDelivery(`{"messages":null,"statuses":[{"id":"x","status":"read"}]}`)},
		{"another webhook field", metaDelivery(`{"phone_number":"15550783881","event":"VERIFIED_ACCOUNT"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			wantOK(t, e.postHub(t, tc.body))
			if n := e.total(t); n != 0 {
				t.Errorf("%d messages stored", n)
			}
			wantMetric(t, e.metricsText(t), `webhook_requests_total{result="ignored"}`, 1)
			l := e.webhookLog(t)
			if l["result"] != msgsvc.ResultIgnored || l["messages"] != float64(0) || l["dup"] != false || l["level"] != "INFO" {
				t.Errorf("log line %v", l)
			}
			if _, ok := l["message_id"]; ok {
				t.Errorf("ignored delivery logs a message_id: %v", l)
			}
		})
	}
}

func TestWhatsAppIdempotent(t *testing.T) {
	e := newEnv(t)
	text := readDelivery(t, "text.json")
	several := readDelivery(t, "several_messages.json")
	m := func(fields map[string]any) string { return metaMessage(t, fields) }

	steps := []struct {
		name   string
		body   []byte
		result string
		total  int64
	}{
		{"first delivery", text, msgsvc.ResultCreated, 1},
		{"the same delivery again", text, msgsvc.ResultDuplicate, 1},
		{"a plain message can repeat a delivered id", body(t, map[string]any{"message_id": "wamid.several.1"}), msgsvc.ResultCreated, 2},
		{"partly new delivery", several, msgsvc.ResultCreated, 4},
		{"all known", several, msgsvc.ResultDuplicate, 4},
		{"a repeat inside one delivery: the first wins",
			metaDelivery(metaValue(m(map[string]any{"id": "wamid.dup"}), m(map[string]any{"id": "wamid.dup", "text": map[string]any{"body": "second"}}))),
			msgsvc.ResultCreated, 5},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			wantOK(t, e.postHub(t, s.body))
			if n := e.total(t); n != s.total {
				t.Errorf("total = %d, want %d", n, s.total)
			}
			l := e.webhookLog(t)
			if l["result"] != s.result || l["dup"] != (s.result == msgsvc.ResultDuplicate) {
				t.Errorf("log line %v", l)
			}
		})
	}
	for _, m := range e.all(t) {
		switch m.MessageID {
		case "wamid.several.1":
			if m.From != "+919876543210" || m.Text == nil || *m.Text != "Hello" {
				t.Errorf("the plain message was overwritten by the delivery: %+v", m)
			}
		case "wamid.dup":
			if m.Text == nil || *m.Text != "Hello" {
				t.Errorf("the second copy in one delivery won: %+v", m)
			}
		}
	}
	metrics := e.metricsText(t)
	wantMetric(t, metrics, `webhook_requests_total{result="created"}`, 4)
	wantMetric(t, metrics, `webhook_requests_total{result="duplicate"}`, 2)
}

// countingStore records every Insert call.
type countingStore struct {
	msgsvc.Store
	mu    sync.Mutex
	calls [][]msgsvc.Message
}

func (s *countingStore) Insert(ctx context.Context, msgs []msgsvc.Message) ([]bool, error) {
	s.mu.Lock()
	s.calls = append(s.calls, slices.Clone(msgs))
	s.mu.Unlock()
	return s.Store.Insert(ctx, msgs)
}

func TestWhatsAppOneInsertPerDelivery(t *testing.T) {
	var cs *countingStore
	e := newEnv(t, func(c *msgsvc.Config) {
		cs = &countingStore{Store: c.Store}
		c.Store = cs
	})
	wantOK(t, e.postHub(t, readDelivery(t, "several_entries.json")))
	wantOK(t, e.postHub(t, readDelivery(t, "statuses_only.json")))
	want422(t, e.postHub(t, readDelivery(t, "invalid_second_from.json")))
	if len(cs.calls) != 1 || len(cs.calls[0]) != 3 {
		t.Fatalf("Insert calls: %v, want one call of 3 messages", cs.calls)
	}
	if got := ids(cs.calls[0]); !slices.Equal(got, []string{"wamid.entries.1", "wamid.entries.2", "wamid.entries.3"}) {
		t.Errorf("inserted %q, want document order", got)
	}
}

func TestWhatsAppStoreFailure(t *testing.T) {
	e := newEnv(t)
	e.store.failInsert(errStoreDown)
	rec := e.postHub(t, readDelivery(t, "several_messages.json"))
	wantDetail(t, rec, http.StatusInternalServerError, "internal server error")
	if n := e.total(t); n != 0 {
		t.Errorf("%d stored", n)
	}
	wantMetric(t, e.metricsText(t), `webhook_requests_total{result="store_error"}`, 1)
	l := e.webhookLog(t)
	if l["result"] != msgsvc.ResultStoreError || l["level"] != "ERROR" || l["message_id"] != "wamid.several.1" || l["messages"] != float64(3) {
		t.Errorf("log line %v", l)
	}
}

// TestWhatsAppChecksFirst checks that a delivery goes through the same size,
// secret and signature checks as any body, before it is read as JSON.
func TestWhatsAppChecksFirst(t *testing.T) {
	b := readDelivery(t, "text.json")
	t.Run("unsigned", func(t *testing.T) {
		e := newEnv(t)
		wantDetail(t, e.serve(t, webhookRequest(t, b)), http.StatusUnauthorized, "invalid signature")
		wantDetail(t, e.serve(t, webhookRequest(t, b, msgsvc.HubSignatureHeader, "sha256="+msgsvc.Sign([]byte("other"), b))), http.StatusUnauthorized, "invalid signature")
	})
	t.Run("X-Signature works too", func(t *testing.T) {
		e := newEnv(t)
		wantOK(t, e.post(t, b))
		if n := e.total(t); n != 1 {
			t.Errorf("total %d", n)
		}
	})
	t.Run("too large", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = int64(len(b) - 1) })
		wantDetail(t, e.postHub(t, b), http.StatusRequestEntityTooLarge, "request body too large")
	})
	t.Run("no secret", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.Secret = "" })
		wantDetail(t, e.serve(t, webhookRequest(t, b)), http.StatusServiceUnavailable, "webhook secret not configured")
	})
}

// TestWhatsAppDetection checks which bodies are deliveries: only an object
// whose "object" member is exactly the string whatsapp_business_account.
// Every other body keeps the plain message rules.
func TestWhatsAppDetection(t *testing.T) {
	plain := `"message_id":"p1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z"`
	for _, tc := range []struct {
		name     string
		body     string
		delivery bool
		status   int
	}{
		{"plain message", `{` + plain + `}`, false, 200},
		{"plain message with another object", `{` + plain + `,"object":"page"}`, false, 200},
		{"plain message naming the object in its text", `{` + plain + `,"text":"\"object\":\"whatsapp_business_account\""}`, false, 200},
		{"object in an array", `{` + plain + `,"object":["whatsapp_business_account"]}`, false, 200},
		{"object in another case", `{` + plain + `,"Object":"whatsapp_business_account"}`, false, 200},
		{"object value in another case", `{` + plain + `,"object":"WhatsApp_Business_Account"}`, false, 200},
		{"nested object", `{` + plain + `,"x":{"object":"whatsapp_business_account"}}`, false, 200},
		{"not JSON", `{"object":"whatsapp_business_account",`, false, 422},
		{"a top-level array", `[{"object":"whatsapp_business_account","entry":[]}]`, false, 422},
		{"delivery", `{"object":"whatsapp_business_account","entry":[]}`, true, 200},
		{"escaped delivery", `{"\u006fbject":"whatsapp\u005fbusiness_account","entry":[]}`, true, 200},
		{"the last repeated key counts", `{"object":"page","object":"whatsapp_business_account","entry":[]}`, true, 200},
		{"the last repeated key counts, the other way", `{` + plain + `,"object":"whatsapp_business_account","object":"page"}`, false, 200},
		{"a plain message marked as a delivery is a delivery", `{` + plain + `,"object":"whatsapp_business_account"}`, true, 422},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := msgsvc.IsWhatsAppDelivery([]byte(tc.body)); got != tc.delivery {
				t.Errorf("IsWhatsAppDelivery = %v, want %v", got, tc.delivery)
			}
			e := newEnv(t)
			rec := e.postHub(t, []byte(tc.body))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			_, isDelivery := e.webhookLog(t)["messages"]
			if isDelivery != tc.delivery && rec.Code == 200 {
				t.Errorf("log line %v", e.webhookLog(t))
			}
			if rec.Code == 422 && tc.delivery {
				if got := locs(want422(t, rec)); !slices.Equal(got, []string{"body.entry"}) {
					t.Errorf("locs %q", got)
				}
			}
		})
	}
	if _, err := msgsvc.ParseWhatsAppDelivery([]byte(`{"message_id":"m1"}`)); err == nil {
		t.Error("ParseWhatsAppDelivery accepted a plain message")
	} else if ve := new(msgsvc.ValidationError); !errors.As(err, &ve) || locString(ve.Detail[0].Loc) != "body.object" {
		t.Errorf("ParseWhatsAppDelivery of a plain message: %v", err)
	}
}

// TestWhatsAppEndToEnd sends a recorded delivery over HTTP to the real
// handler, signed as Meta signs it, and reads it back through the API.
func TestWhatsAppEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *msgsvc.Config) { c.VerifyToken = "my-verify-token" })
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	client := srv.Client()

	// Meta first checks the endpoint with the handshake.
	resp, err := client.Get(srv.URL + "/webhook?hub.mode=subscribe&hub.verify_token=my-verify-token&hub.challenge=1158201444")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp.Body); resp.StatusCode != 200 || string(got) != "1158201444" {
		t.Fatalf("handshake: %d %q", resp.StatusCode, got)
	}

	b := readDelivery(t, "several_entries.json")
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/webhook", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+msgsvc.Sign([]byte(testSecret), b))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp.Body); resp.StatusCode != 200 || string(got) != `{"status":"ok"}` {
		t.Fatalf("delivery: %d %s", resp.StatusCode, got)
	}

	resp, err = client.Get(srv.URL + "/messages?from=%2B919876543210")
	if err != nil {
		t.Fatal(err)
	}
	var page listPage
	if err := json.Unmarshal(readAll(t, resp.Body), &page); err != nil {
		t.Fatal(err)
	}
	wantMessages(t, page.Data, []msgsvc.Message{
		{MessageID: "wamid.entries.2", From: "+919876543210", To: "+447700900123", TS: "2025-06-08T21:05:02Z", Text: ptr("Unboxing")},
		{MessageID: "wamid.entries.3", From: "+919876543210", To: "+447700900123", TS: "2025-06-08T21:05:03Z"},
	})

	resp, err = client.Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Total   int64   `json:"total_messages"`
		Senders int64   `json:"senders_count"`
		First   *string `json:"first_message_ts"`
	}
	if err := json.Unmarshal(readAll(t, resp.Body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Total != 3 || st.Senders != 2 || st.First == nil || *st.First != "2025-06-08T21:05:00Z" {
		t.Errorf("stats %+v", st)
	}
}

// TestWhatsAppVerifyHandshake completes TestVerifyHandshake: the contract's
// answers to GET /webhook with and without a verify token.
func TestWhatsAppVerifyHandshake(t *testing.T) {
	t.Run("with a token", func(t *testing.T) {
		e := newEnv(t, func(c *msgsvc.Config) { c.VerifyToken = "tok en/é" })
		for _, tc := range []struct {
			query  string
			status int
			body   string
		}{
			{"hub.mode=subscribe&hub.verify_token=tok+en%2F%C3%A9&hub.challenge=1158201444", 200, "1158201444"},
			{"hub.challenge=%3Cb%3E&hub.verify_token=tok%20en/%C3%A9&hub.mode=subscribe", 200, "<b>"},
			{"hub.mode=subscribe&hub.verify_token=tok+en%2F%C3%A9", 200, ""},
			{"hub.mode=subscribe&hub.verify_token=TOK+EN%2F%C3%A9&hub.challenge=1", 403, ""},
			{"hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1", 403, ""},
			{"hub.mode=subscribe&hub.verify_token=&hub.challenge=1", 403, ""},
			{"hub.mode=Subscribe&hub.verify_token=tok+en%2F%C3%A9&hub.challenge=1", 403, ""},
			{"hub.verify_token=tok+en%2F%C3%A9&hub.challenge=1", 403, ""},
		} {
			t.Run(tc.query, func(t *testing.T) {
				rec := e.get(t, "/webhook?"+tc.query)
				if rec.Code != tc.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
				}
				if tc.status == 200 {
					if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || rec.Body.String() != tc.body {
						t.Errorf("answer %q %q, want text/plain %q", ct, rec.Body, tc.body)
					}
					return
				}
				wantDetail(t, rec, http.StatusForbidden, "Forbidden")
			})
		}
		if l := e.lastLog(t); l["path"] != "/webhook" || l["method"] != "GET" {
			t.Errorf("log line %v", l)
		} else if _, ok := l["result"]; ok {
			t.Errorf("handshake line has a webhook result: %v", l)
		}
		wantMetric(t, e.metricsText(t), `webhook_requests_total{result="created"}`, 0)
		// POST still works beside the handshake.
		wantOK(t, e.postHub(t, readDelivery(t, "text.json")))
		if rec := e.serve(t, httptest.NewRequest(http.MethodPut, "/webhook", nil)); rec.Code != 405 || rec.Header().Get("Allow") != "GET, POST" {
			t.Errorf("PUT: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
		}
	})
	t.Run("without a token", func(t *testing.T) {
		e := newEnv(t)
		rec := e.get(t, "/webhook?hub.mode=subscribe&hub.verify_token=&hub.challenge=1")
		wantDetail(t, rec, http.StatusMethodNotAllowed, "Method Not Allowed")
		if allow := rec.Header().Get("Allow"); allow != "POST" {
			t.Errorf("Allow %q", allow)
		}
	})
}

// FuzzWhatsAppDelivery drives deliveries through ParseWhatsAppDelivery and
// the whole handler. Properties: no panic and no 5xx; a delivery is answered
// 200 exactly when ParseWhatsAppDelivery accepts it, and 422 otherwise; every
// accepted message re-validates and is stored as mapped (the first of a
// repeated id wins); a refused delivery stores nothing; every refusal is
// located in the body, without repeated items.
func FuzzWhatsAppDelivery(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "whatsapp", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		isDelivery := msgsvc.IsWhatsAppDelivery(body)
		msgs, err := msgsvc.ParseWhatsAppDelivery(body)
		if err != nil {
			var ve *msgsvc.ValidationError
			if !errors.As(err, &ve) || len(ve.Detail) == 0 || msgs != nil {
				t.Fatalf("refusal %v is not a non-empty *ValidationError (messages %v)", err, msgs)
			}
			seen := map[string]bool{}
			for _, d := range ve.Detail {
				l := fmt.Sprintf("%#v", d.Loc) // Go ints, which locString does not render
				if !isDelivery && l != `[]interface {}{"body", "object"}` || isDelivery && !strings.HasPrefix(l, `[]interface {}{"body", "entry"`) || d.Msg == "" || d.Type == "" {
					t.Fatalf("bad item %+v (delivery %v)", d, isDelivery)
				}
				if seen[d.Type+" "+l] {
					t.Fatalf("repeated item %+v", d)
				}
				seen[d.Type+" "+l] = true
			}
		} else if !isDelivery {
			t.Fatal("ParseWhatsAppDelivery accepted a body that is not a delivery")
		}
		for _, m := range msgs {
			if err := msgsvc.ValidateMessage(m, nil); err != nil {
				t.Fatalf("accepted %+v does not re-validate: %v", m, err)
			}
			if len(m.TS) != len("2025-01-15T10:00:00Z") {
				t.Fatalf("ts %q is not whole seconds", m.TS)
			}
		}
		if !isDelivery {
			return // FuzzHandler covers plain messages
		}

		e := newEnv(t, func(c *msgsvc.Config) { c.Logger = msgsvc.NewLogger(&bytes.Buffer{}, nil) })
		rec := e.postHub(t, body)
		if rec.Code >= 500 || rec.Header().Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
		stored := e.all(t)
		if err != nil {
			if rec.Code != http.StatusUnprocessableEntity || len(stored) != 0 {
				t.Fatalf("refused delivery: %d, %d stored: %s", rec.Code, len(stored), rec.Body)
			}
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("accepted delivery answered %d: %s", rec.Code, rec.Body)
		}
		first := map[string]msgsvc.Message{}
		for _, m := range msgs {
			if _, ok := first[m.MessageID]; !ok {
				first[m.MessageID] = m
			}
		}
		if len(stored) != len(first) {
			t.Fatalf("%d stored, want %d", len(stored), len(first))
		}
		for _, s := range stored {
			if !equalMessage(s, first[s.MessageID]) {
				t.Fatalf("stored %+v, mapped %+v", s, first[s.MessageID])
			}
		}
		result := msgsvc.ResultCreated
		if len(msgs) == 0 {
			result = msgsvc.ResultIgnored
		}
		wantMetric(t, e.metricsText(t), `webhook_requests_total{result="`+result+`"}`, 1)
	})
}
