//go:build !nosqlstore

package msgsvc_test

import (
	"testing"

	"github.com/msgsvc/msgsvc/internal/pgtest"
)

// TestHTTPPostgres runs every test of this package again with the handler
// on a Postgres store (a schema of its own per test), so the whole HTTP
// contract is checked on both backends.
func TestHTTPPostgres(t *testing.T) {
	pgtest.Rerun(t, "^Test")
}
