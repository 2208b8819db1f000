package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
)

// TestDaemonPostgres runs the end-to-end tests of the real daemon again on
// Postgres: the whole webhook and query path, shutdown under load, and the
// concurrent senders.
func TestDaemonPostgres(t *testing.T) {
	pgtest.Rerun(t, "^TestDaemon(EndToEnd|WithoutSecret|SecretRotation|MaxBodyBytes|LogLevel|GracefulShutdown|QueryDecisions|ConcurrentSendersFirstBodyWins)$")
}

// sender posts signed webhooks to several daemons over keep-alive
// connections.
type sender struct {
	client *http.Client
	secret string
}

func newSender(secret string) *sender {
	return &sender{
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		secret: secret,
	}
}

// post sends body to base's /webhook and returns the status, 0 when the
// request failed.
func (s *sender) post(base string, body []byte) int {
	req, err := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(s.secret), body))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestDaemonReplicasSharePostgres runs two daemons on one Postgres
// database. Concurrent senders spread deliveries with overlapping ids over
// both, resending ids with other texts: every id is stored once, with the
// text of the first acknowledged delivery of it, and /stats, read from
// either replica, counts exactly the stored rows, by sender.
func TestDaemonReplicasSharePostgres(t *testing.T) {
	dbURL := pgtest.URL(t)
	env := map[string]string{"WEBHOOK_SECRET": "s", "DATABASE_URL": dbURL}
	replicas := []*daemon{startDaemon(t, env), startDaemon(t, env)}

	const (
		workers = 32
		ids     = 1500
		sends   = 4 // deliveries per id, to random replicas, by random workers
	)
	senders := []string{"+4915550000001", "+4915550000002", "+4915550000003", "+4915550000004", "+4915550000005"}
	fromOf := func(i int) string { return senders[i*7%len(senders)] }
	jobs := make(chan int)
	var (
		mu      sync.Mutex
		acked   = map[string][]string{} // id -> texts acknowledged with 200, in answer order
		other   = map[int]int{}
		created int
	)
	s := newSender("s")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 4))
			for job := range jobs {
				i := job / sends
				id := fmt.Sprintf("rep-%04d", i)
				text := fmt.Sprintf("from worker %d, send %d", w, job%sends)
				body := fmt.Appendf(nil, `{"message_id":%q,"from":%q,"to":"+4915559999999","ts":"2025-03-0%dT10:%02d:00Z","text":%q}`,
					id, fromOf(i), 1+i%9, i%60, text)
				code := s.post(replicas[r.IntN(len(replicas))].base, body)
				mu.Lock()
				if code == http.StatusOK {
					acked[id] = append(acked[id], text)
				} else {
					other[code]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range ids * sends {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("answers other than 200: %v", other)
	}

	// Exactly one row per id, holding one of the texts sent for it.
	for i, d := range replicas {
		stored := listAll(t, d)
		if len(stored) != ids {
			t.Errorf("replica %d lists %d rows, want %d", i, len(stored), ids)
		}
		for id, texts := range acked {
			found := false
			for _, text := range texts {
				found = found || stored[id] == text
			}
			if !found {
				t.Errorf("replica %d: %s holds %q, not one of the texts sent: %q", i, id, stored[id], texts)
			}
		}
	}

	// /stats is exact from either replica.
	want := map[string]float64{}
	for i := range ids {
		want[fromOf(i)]++
	}
	for i, d := range replicas {
		st := d.get(t, "/stats", "").json(t)
		if st["total_messages"] != float64(ids) || st["senders_count"] != float64(len(senders)) {
			t.Errorf("replica %d /stats: total %v senders %v, want %d and %d", i, st["total_messages"], st["senders_count"], ids, len(senders))
		}
		for _, row := range st["messages_per_sender"].([]any) {
			row := row.(map[string]any)
			if row["count"] != want[row["from"].(string)] {
				t.Errorf("replica %d /stats: %v sent %v, want %v", i, row["from"], row["count"], want[row["from"].(string)])
			}
		}
	}

	// Each id was created by exactly one delivery, on one replica or the other.
	for _, d := range replicas {
		n, _ := metric(string(d.get(t, "/metrics", "").body), "webhook_requests_total", map[string]string{"result": "created"})
		created += int(n)
	}
	if created != ids {
		t.Errorf("webhook_requests_total{result=created} summed over the replicas = %d, want %d", created, ids)
	}
	t.Logf("%d deliveries of %d ids over 2 replicas: %d rows, %d created", ids*sends, ids, ids, created)
}

// faultProxy forwards TCP connections to a Postgres server until cut: then
// it drops every open connection and closes new ones at once, as a server
// that went away does. restore makes it forward again.
type faultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = ln.Close()
		p.setCut(true)
	})
	go p.serve()
	return p
}

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			_ = c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *faultProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

// setCut cuts or restores the connection to the server.
func (p *faultProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// TestDaemonPostgresOutage loses the database under load, through a proxy
// that drops every connection and refuses new ones, then brings it back.
// While it is gone, readiness is 503 and webhooks get 503 with Retry-After;
// the daemon recovers by itself, without a restart; its log says the store
// became unavailable once and recovered once; and every delivery that got
// a 200 is stored.
func TestDaemonPostgresOutage(t *testing.T) {
	dbURL := pgtest.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newFaultProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": "s", "DATABASE_URL": u.String()})
	s := newSender("s")

	var (
		mu     sync.Mutex
		acked  []string
		counts = map[int]int{}
		seq    int
	)
	send := func() int {
		mu.Lock()
		seq++
		id := fmt.Sprintf("out-%05d", seq)
		mu.Unlock()
		body := fmt.Appendf(nil, `{"message_id":%q,"from":"+15550001234","to":"+15550005678","ts":"2025-04-01T08:00:00Z"}`, id)
		code := s.post(d.base, body)
		mu.Lock()
		counts[code]++
		if code == http.StatusOK {
			acked = append(acked, id)
		}
		mu.Unlock()
		return code
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if send() != http.StatusOK {
					time.Sleep(20 * time.Millisecond) // a sender backs off
				}
			}
		}()
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ackedNow := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor("deliveries before the outage", func() bool { return ackedNow() >= 200 })

	proxy.setCut(true)
	waitFor("readiness to fail", func() bool { return d.get(t, "/health/ready", "").status == http.StatusServiceUnavailable })
	before := ackedNow()
	var during []int
	for range 20 {
		body := fmt.Appendf(nil, `{"message_id":"during-%d","from":"+15550001234","to":"+15550005678","ts":"2025-04-01T08:00:00Z"}`, len(during))
		req, _ := http.NewRequest(http.MethodPost, d.base+"/webhook", bytes.NewReader(body))
		req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte("s"), body))
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		during = append(during, resp.StatusCode)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("webhook during the outage: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	time.Sleep(500 * time.Millisecond) // the load keeps failing for a while

	proxy.setCut(false)
	waitFor("readiness to recover", func() bool { return d.get(t, "/health/ready", "").status == http.StatusOK })
	waitFor("deliveries after the outage", func() bool { return ackedNow() >= before+200 })
	close(stop)
	wg.Wait()

	stored := listAll(t, d)
	missing := 0
	for _, id := range acked {
		if _, ok := stored[id]; !ok {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged %s is not stored", id)
			}
		}
	}
	for i := range during {
		if _, ok := stored[fmt.Sprintf("during-%d", i)]; ok {
			t.Errorf("during-%d was refused with 503 but is stored", i)
		}
	}
	logs := d.stdout.text()
	if n := strings.Count(logs, `"msg":"store unavailable"`); n != 1 {
		t.Errorf("%d 'store unavailable' log lines, want 1", n)
	}
	if n := strings.Count(logs, `"msg":"store recovered"`); n != 1 {
		t.Errorf("%d 'store recovered' log lines, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: %v; %d acknowledged, %d missing, %d rows stored", counts, len(acked), missing, len(stored))
}
