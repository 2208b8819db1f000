// Command sender signs one message with msgsvc.Sign and POSTs it to a msgsvc
// webhook, printing the status and the answer. It exits 1 unless the answer
// is a 2xx.
//
//	WEBHOOK_SECRET=dev go run ./examples/sender -id m1 -from +919876543210 -to +14155550100 -text Hello
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/msgsvc/msgsvc"
)

func main() {
	url := flag.String("url", envOr("MSGSVC_URL", "http://localhost:8000/webhook"), "webhook URL (env MSGSVC_URL)")
	secret := flag.String("secret", os.Getenv("WEBHOOK_SECRET"), "HMAC secret (env WEBHOOK_SECRET)")
	hub := flag.Bool("hub", false, "sign in X-Hub-Signature-256 (sha256=...) instead of X-Signature")
	var m msgsvc.Message
	flag.StringVar(&m.MessageID, "id", fmt.Sprintf("sender-%d", time.Now().UnixNano()), "message_id")
	flag.StringVar(&m.From, "from", "+919876543210", "sender, E.164")
	flag.StringVar(&m.To, "to", "+14155550100", "recipient, E.164")
	flag.StringVar(&m.TS, "ts", time.Now().UTC().Format(time.RFC3339), "timestamp, UTC ending in Z")
	text := flag.String("text", "", "message text (empty: none)")
	flag.Parse()
	if *text != "" {
		m.Text = text
	}
	if *secret == "" {
		fmt.Fprintln(os.Stderr, "sender: set -secret or WEBHOOK_SECRET")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, answer, err := send(ctx, http.DefaultClient, *url, []byte(*secret), m, *hub)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		os.Exit(1)
	}
	fmt.Printf("%d %s\n", status, answer)
	if status/100 != 2 {
		os.Exit(1)
	}
}

// send POSTs m to url, signed with secret over the exact bytes sent, and
// returns the answer's status and body.
func send(ctx context.Context, client *http.Client, url string, secret []byte, m msgsvc.Message, hub bool) (int, []byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	sig := msgsvc.Sign(secret, body)
	if hub {
		req.Header.Set(msgsvc.HubSignatureHeader, "sha256="+sig)
	} else {
		req.Header.Set(msgsvc.SignatureHeader, sig)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, err
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
