package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The daemon against clients that misbehave, over real TCP.

// dialDaemon opens a raw connection to the daemon.
func dialDaemon(tb testing.TB, d *daemon) net.Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c (or answers and then
// closes) within d.
func closedWithin(c net.Conn, d time.Duration) (answer string, closed bool) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

func TestDaemonCutsOffSlowClients(t *testing.T) {
	d := startDaemon(t, map[string]string{
		"WEBHOOK_SECRET": "s", "READ_HEADER_TIMEOUT": "1s", "READ_TIMEOUT": "2s",
	})
	t.Run("slow header", func(t *testing.T) {
		c := dialDaemon(t, d)
		start := time.Now()
		fmt.Fprintf(c, "GET /health/live HTTP/1.1\r\nHost: x\r\n") // and never the blank line
		if _, closed := closedWithin(c, 5*time.Second); !closed {
			t.Fatal("a connection that never finished its header was still open after 5s")
		}
		if el := time.Since(start); el > 4*time.Second {
			t.Errorf("cut off after %v, want about READ_HEADER_TIMEOUT (1s)", el)
		}
	})
	t.Run("slow body", func(t *testing.T) {
		c := dialDaemon(t, d)
		start := time.Now()
		fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"message_id\":")
		answer, closed := closedWithin(c, 6*time.Second)
		if !closed {
			t.Fatal("a connection that never finished its body was still open after 6s")
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("cut off after %v, want about READ_TIMEOUT (2s)", el)
		}
		if answer != "" && !strings.HasPrefix(answer, "HTTP/1.1 4") {
			t.Errorf("answer to a body that never came: %q", firstLine(answer))
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestDaemonRefusesOversizedRequests(t *testing.T) {
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": "s", "MAX_BODY_BYTES": "1024"})
	t.Run("headers over the limit: 431", func(t *testing.T) {
		c := dialDaemon(t, d)
		fmt.Fprintf(c, "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 200<<10))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("declared body over the limit: 413 before the body is sent", func(t *testing.T) {
		c := dialDaemon(t, d)
		// Only the header goes out: the answer must not wait for 100 MiB.
		fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100<<20)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer before the body was sent: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
	})
}

func TestDaemonBoundsConnections(t *testing.T) {
	const limit = 4
	d := startDaemon(t, map[string]string{
		"WEBHOOK_SECRET": "s", "MAX_CONNECTIONS": fmt.Sprint(limit), "READ_HEADER_TIMEOUT": "30s",
	})
	// Fill every slot with a connection that has sent a request line and
	// is slowly sending its header.
	var held []net.Conn
	for range limit {
		c := dialDaemon(t, d)
		fmt.Fprintf(c, "GET /health/live HTTP/1.1\r\n")
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server accept them all
	extra := dialDaemon(t, d)          // the kernel queues it; the server does not take it
	fmt.Fprintf(extra, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = extra.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a connection past MAX_CONNECTIONS=%d was served while all slots were held", limit)
	}
	held[0].Close() // a slot frees: the queued connection is served
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(extra), nil)
	if err != nil {
		t.Fatalf("the queued connection was not served once a slot freed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
