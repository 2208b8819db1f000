package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// TestDaemonConcurrentSendersFirstBodyWins runs 64 senders against the real
// daemon. Half send new ids; the other half resend ids already acknowledged,
// with a different body. Every id must be stored once, with the body that was
// acknowledged first, and webhook_requests_total{result="created"} must equal
// the number of rows.
func TestDaemonConcurrentSendersFirstBodyWins(t *testing.T) {
	d := startDaemon(t, map[string]string{"WEBHOOK_SECRET": "s"})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(id, text string) int {
		body := fmt.Appendf(nil, `{"message_id":%q,"from":"+12345678","to":"+19876543","ts":"2025-01-15T10:00:00Z","text":%q}`, id, text)
		req, _ := http.NewRequest(http.MethodPost, d.base+"/webhook", bytes.NewReader(body))
		req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte("s"), body))
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	var mu sync.Mutex
	var acked []string // ids whose first body was acknowledged
	const perSender = 60
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range perSender {
				if w%2 == 0 {
					id := fmt.Sprintf("w%02d-%03d", w, i)
					if post(id, "first "+id) == http.StatusOK {
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
					}
					continue
				}
				mu.Lock()
				var id string
				if len(acked) > 0 {
					id = acked[r.IntN(len(acked))]
				}
				mu.Unlock()
				if id == "" {
					continue
				}
				if code := post(id, fmt.Sprintf("later body from sender %d", w)); code != http.StatusOK {
					t.Errorf("resend of %s: %d", id, code)
				}
			}
		}()
	}
	wg.Wait()
	if len(acked) != 32*perSender {
		t.Fatalf("%d new ids acknowledged, want %d", len(acked), 32*perSender)
	}

	// Every row, page by page with the cursor.
	stored := listAll(t, d)
	if len(stored) != len(acked) {
		t.Errorf("%d rows, want %d", len(stored), len(acked))
	}
	for _, id := range acked {
		if stored[id] != "first "+id {
			t.Errorf("%s holds %q, want its first body", id, stored[id])
		}
	}
	metrics := string(d.get(t, "/metrics", "").body)
	if created, ok := metric(metrics, "webhook_requests_total", map[string]string{"result": "created"}); !ok || created != float64(len(stored)) {
		t.Errorf("created = %v, rows = %d", created, len(stored))
	}
}
