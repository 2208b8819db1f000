package msgsvc

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNoteStoreIgnoresStaleRequests checks that the outage events follow
// the store, not the order in which concurrent requests end: a webhook
// that started before the outage was noted and ends with a 200 after it
// does not end it, nor does a failure that started before the recovery
// begin another.
func TestNoteStoreIgnoresStaleRequests(t *testing.T) {
	var buf bytes.Buffer
	h := &Handler{log: slog.New(slog.NewJSONHandler(&buf, nil))}
	r := httptest.NewRequest("POST", "/webhook", nil)
	down := errors.New("connection refused")
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	created := func(start time.Time) { h.noteStore(r, start, "/webhook", 200, &requestLog{result: ResultCreated}) }
	failed := func(start time.Time) { h.noteStore(r, start, "/webhook", 503, &requestLog{err: down}) }

	failed(at(time.Millisecond)) // the outage: noted now
	created(t0)                  // committed before it, answered after: proves nothing
	time.Sleep(time.Millisecond) // the next requests start after the outage was noted
	failed(time.Now())           // still down
	stale := time.Now()          // a request that starts now and fails after the recovery
	time.Sleep(time.Millisecond) //
	created(time.Now())          // a commit that started after the outage: recovered
	failed(stale)                // began before the recovery: not a new outage
	for _, c := range []struct {
		msg  string
		want int
	}{{"store unavailable", 1}, {"store recovered", 1}} {
		if n := strings.Count(buf.String(), `"msg":"`+c.msg+`"`); n != c.want {
			t.Errorf("%d %q lines, want %d:\n%s", n, c.msg, c.want, buf.String())
		}
	}
	if h.storeDown.Load() != 0 {
		t.Errorf("store still noted down (%b)", h.storeDown.Load())
	}
}
