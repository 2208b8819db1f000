// Command whatsapp replays recorded WhatsApp Cloud API deliveries against a
// msgsvc webhook. Each file is sent byte for byte, signed the way Meta signs
// its deliveries: X-Hub-Signature-256: sha256=hex(HMAC-SHA256(secret, body)).
// It prints one line per file and exits 1 unless every answer is a 2xx.
//
//	WEBHOOK_SECRET=dev go run ./examples/whatsapp testdata/whatsapp/*.json
//
// With -verify-token it first performs the subscription handshake Meta
// makes when a webhook is configured (GET /webhook?hub.mode=subscribe&...).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/msgsvc/msgsvc"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whatsapp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", envOr("MSGSVC_URL", "http://localhost:8000/webhook"), "webhook URL (env MSGSVC_URL)")
	secret := fs.String("secret", os.Getenv("WEBHOOK_SECRET"), "HMAC secret, Meta's app secret (env WEBHOOK_SECRET)")
	token := fs.String("verify-token", "", "first perform the GET handshake with this verify token")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each request")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: whatsapp [flags] delivery.json... (- reads standard input)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *secret == "" || fs.NArg() == 0 {
		fs.Usage()
		if *secret == "" {
			fmt.Fprintln(stderr, "whatsapp: set -secret or WEBHOOK_SECRET")
		}
		return 2
	}
	client := &http.Client{Timeout: *timeout}

	if *token != "" {
		if err := handshake(ctx, client, *target, *token); err != nil {
			fmt.Fprintln(stderr, "whatsapp: handshake:", err)
			return 1
		}
		fmt.Fprintln(stdout, "handshake: ok")
	}
	status := 0
	for _, name := range fs.Args() {
		body, err := readFile(name, stdin)
		if err != nil {
			fmt.Fprintln(stderr, "whatsapp:", err)
			status = 1
			continue
		}
		code, answer, err := replay(ctx, client, *target, []byte(*secret), body)
		if err != nil {
			fmt.Fprintf(stderr, "whatsapp: %s: %v\n", name, err)
			status = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: %d %s\n", name, code, bytes.TrimSpace(answer))
		if code/100 != 2 {
			status = 1
		}
	}
	return status
}

// readFile returns the bytes of the named file, or of stdin for "-".
func readFile(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}

// replay POSTs body unchanged to target, signed with secret in
// X-Hub-Signature-256, and returns the answer's status and body.
func replay(ctx context.Context, client *http.Client, target string, secret, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(msgsvc.HubSignatureHeader, "sha256="+msgsvc.Sign(secret, body))
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, err
}

// handshake performs Meta's subscription check: the endpoint must echo a
// random challenge when the verify token matches.
func handshake(ctx context.Context, client *http.Client, target, token string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	challenge := strconv.FormatInt(time.Now().UnixNano(), 10)
	u.RawQuery = url.Values{
		"hub.mode":         {"subscribe"},
		"hub.verify_token": {token},
		"hub.challenge":    {challenge},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(answer) != challenge {
		return fmt.Errorf("%d %s: %w", resp.StatusCode, bytes.TrimSpace(answer), errNoEcho)
	}
	return nil
}

var errNoEcho = errors.New("the challenge was not echoed")

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
