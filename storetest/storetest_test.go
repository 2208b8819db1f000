package storetest_test

import (
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/memstore"
	"github.com/msgsvc/msgsvc/storetest"
)

// TestRunOnMemStore runs the suite on the plainest store, a map behind a
// mutex: its passing shows the suite asks for the contract and not for SQL
// behaviour.

func TestRunOnMemStore(t *testing.T) {
	var opened []*memstore.Store
	storetest.Run(t, func(t *testing.T) msgsvc.Store {
		s := memstore.New()
		opened = append(opened, s)
		return s
	})
	for i, s := range opened {
		if !s.Closed() {
			t.Errorf("store %d was not closed by Run", i)
		}
	}
}
