//go:build nosqlstore

package msgsvc_test

import (
	"testing"

	"github.com/msgsvc/msgsvc/internal/memstore"
)

// openTestStore opens a fresh store in memory (see store_sqlite_test.go).
func openTestStore(tb testing.TB) *memstore.Store {
	tb.Helper()
	st := memstore.New()
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
