package msgsvc_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// TestNoSecretsInOutput sends good and bad requests carrying a secret, a
// signature, message text and phone numbers, then greps every answer body,
// the metrics and the logs for them: none may appear anywhere.
func TestNoSecretsInOutput(t *testing.T) {
	const (
		text   = "the-private-words-of-a-customer"
		from   = "+919812345678"
		to     = "+14155559876"
		badNum = "919876501234" // refused: no "+"
	)
	e := newEnv(t)
	var out strings.Builder
	record := func(rec *httptest.ResponseRecorder) {
		out.WriteString(rec.Body.String())
		for k, vs := range rec.Header() {
			out.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
	}
	good := body(t, map[string]any{"message_id": "p1", "from": from, "to": to, "text": text})
	sig := msgsvc.Sign([]byte(testSecret), good)
	record(e.post(t, good))                                                            // 200
	record(e.post(t, good))                                                            // duplicate
	record(e.serve(t, webhookRequest(t, good, msgsvc.SignatureHeader, sig[:60]+"00"))) // 401
	record(e.serve(t, webhookRequest(t, good, msgsvc.HubSignatureHeader, "sha256="+msgsvc.Sign([]byte("other"), good))))
	bad := body(t, map[string]any{"message_id": "p2", "from": badNum, "to": badNum, "text": strings.Repeat(text, 200)})
	record(e.post(t, bad)) // 422 for every field
	record(e.get(t, "/messages?from="+badNum+"&q="+text+"&since=bad"))
	record(e.get(t, "/"+from)) // an unknown path naming a number
	record(e.get(t, "/messages?limit=x&from=%2B"+from[1:]))
	for _, rec := range []*httptest.ResponseRecorder{e.get(t, "/stats")} {
		if rec.Code != http.StatusOK {
			t.Fatalf("stats: %d", rec.Code)
		}
	}
	out.WriteString(e.metricsText(t))
	out.WriteString(e.logs.String())
	haystack := out.String()
	for name, needle := range map[string]string{
		"secret": testSecret, "signature": sig, "text": text,
		"from": from[1:], "to": to[1:], "refused number": badNum,
	} {
		if strings.Contains(haystack, needle) {
			t.Errorf("the %s %q appears in an answer, the metrics or the logs", name, needle)
		}
	}
}
