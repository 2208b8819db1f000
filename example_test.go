//go:build !nosqlstore

package msgsvc_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// A sender signs the exact bytes it posts and puts the hex digest in the
// X-Signature header (or "sha256=" and the digest in X-Hub-Signature-256).
func ExampleSign() {
	body := []byte("Hello, World!")
	sig := msgsvc.Sign([]byte("It's a Secret to Everybody"), body)
	fmt.Println("X-Signature:", sig)
	fmt.Println("X-Hub-Signature-256: sha256=" + sig)
	// Output:
	// X-Signature: 757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
	// X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
}

// Verify is what the handler runs on every webhook; a receiver of its own
// can use it too, and tell the failures apart with errors.Is.
func ExampleVerify() {
	body := []byte(`{"message_id":"m1"}`)
	h := http.Header{}
	h.Set(msgsvc.SignatureHeader, "SHA256="+strings.ToUpper(msgsvc.Sign([]byte("old"), body)))
	fmt.Println(msgsvc.Verify(h, body, []byte("new"), []byte("old")))
	fmt.Println(msgsvc.Verify(h, body, []byte("new")))
	// Output:
	// <nil>
	// msgsvc: signature does not match
}

// New serves the whole contract from one http.Handler.
func ExampleNew() {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite://:memory:")
	if err != nil {
		panic(err)
	}
	defer st.Close()
	h, err := msgsvc.New(msgsvc.Config{
		Store:  st,
		Secret: "s3cret",
		Logger: msgsvc.NewLogger(io.Discard, nil), // the daemon logs to stdout
	})
	if err != nil {
		panic(err)
	}

	body := `{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"Hello"}`
	r := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
	r.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte("s3cret"), []byte(body)))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Body)

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/messages?from=+919876543210", nil))
	fmt.Println(w.Code, w.Body)
	// Output:
	// 200 {"status":"ok"}
	// 200 {"data":[{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"Hello"}],"total":1,"limit":50,"offset":0,"next_cursor":null}
}
