// Command sender delivers one message to a msgsvc webhook with the Go client
// (package client): it signs the message with the shared secret, POSTs it,
// and retries with backoff while the service is down, overloaded or failing,
// logging each retry. It exits 0 once the service has stored the message (or
// already had it), 1 when the service refuses it or the retries run out, and
// 2 on a usage error.
//
//	WEBHOOK_SECRET=dev go run ./examples/sender -id m1 -from +919876543210 -to +14155550100 -text Hello
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/client"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run sends one message as the flags in args describe and returns the exit
// status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sender", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("url", envOr(getenv, "MSGSVC_URL", client.DefaultBaseURL), "msgsvc base URL (env MSGSVC_URL)")
	secret := fs.String("secret", getenv("WEBHOOK_SECRET"), "HMAC secret (env WEBHOOK_SECRET)")
	attempts := fs.Int("retries", 10, "attempts in all, the first included; 1 disables retries")
	backoff := fs.Duration("backoff", client.DefaultInitialBackoff, "ceiling of the first wait; it doubles up to -max-backoff")
	maxBackoff := fs.Duration("max-backoff", client.DefaultMaxBackoff, "largest ceiling of a wait")
	timeout := fs.Duration("timeout", 2*time.Minute, "gives up after this long, retries included")
	var m msgsvc.Message
	fs.StringVar(&m.MessageID, "id", fmt.Sprintf("sender-%d", time.Now().UnixNano()), "message_id")
	fs.StringVar(&m.From, "from", "+919876543210", "sender, E.164")
	fs.StringVar(&m.To, "to", "+14155550100", "recipient, E.164")
	fs.StringVar(&m.TS, "ts", time.Now().UTC().Format(time.RFC3339), "timestamp, UTC ending in Z")
	text := fs.String("text", "", "message text (empty: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *text != "" {
		m.Text = text
	}
	if *secret == "" {
		fmt.Fprintln(stderr, "sender: set -secret or WEBHOOK_SECRET")
		return 2
	}
	if *attempts < 1 || *backoff <= 0 || *maxBackoff <= 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "sender: -retries must be at least 1, and -backoff, -max-backoff and -timeout positive")
		return 2
	}

	c := &client.Client{
		// Earlier versions of this program took the webhook's own URL.
		BaseURL: strings.TrimSuffix(*baseURL, "/webhook"),
		Secret:  *secret,
		Retry:   client.RetryPolicy{MaxAttempts: *attempts, InitialBackoff: *backoff, MaxBackoff: *maxBackoff},
		OnRetry: func(attempt int, err error, wait time.Duration) {
			fmt.Fprintf(stderr, "sender: attempt %d failed: %v; retrying in %v\n", attempt, err, wait.Round(time.Millisecond))
		},
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := c.Send(ctx, m); err != nil {
		var apiErr *client.APIError
		if errors.As(err, &apiErr) && !apiErr.Temporary() {
			if len(apiErr.Detail) == 0 {
				fmt.Fprintf(stderr, "sender: refused: %d %s\n", apiErr.StatusCode, apiErr.Message)
				return 1
			}
			fmt.Fprintf(stderr, "sender: refused: %d %s\n", apiErr.StatusCode, http.StatusText(apiErr.StatusCode))
			for _, d := range apiErr.Detail {
				fmt.Fprintf(stderr, "  %v: %s\n", d.Loc, d.Msg)
			}
			return 1
		}
		fmt.Fprintln(stderr, "sender:", err)
		return 1
	}
	fmt.Fprintf(stdout, "sent %s\n", m.MessageID)
	return 0
}

func envOr(getenv func(string) string, name, fallback string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return fallback
}
