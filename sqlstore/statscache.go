package sqlstore

import (
	"slices"
	"sync"

	"github.com/msgsvc/msgsvc"
)

// statsCache keeps the last answer of Stats on SQLite with the write
// generation it was read at, so that GET /stats between two commits reads
// no rows at all (a poll of a dashboard, a load balancer's check). The
// counters change only in the writer's transactions, and the writer moves
// DB.writes on after each one, committed or failed, before any of its
// callers is answered.
//
// Why a cached answer is never stale: Stats loads the generation before its
// read transaction begins, so what it reads holds every commit the
// generation counts, and an answer is served again only while the
// generation is unchanged. A caller told that its message was stored was
// told after the writer moved the generation past that commit, so its next
// Stats reads afresh. An answer read at generation g may hold one commit
// more (the generation moves just after the commit): that answer is newer
// than g, never older.
//
// This relies on the writer being the only one writing the file, as the
// in-memory top ten (DB.top) does; Open's lock keeps other stores out
// (ErrInUse). Postgres is shared by replicas, each with a writer of its
// own: it has no cache.
type statsCache struct {
	mu  sync.Mutex
	ok  bool
	gen uint64
	st  msgsvc.Stats
}

// get returns the cached answer if it was read at generation gen.
func (c *statsCache) get(gen uint64) (msgsvc.Stats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok || c.gen != gen {
		return msgsvc.Stats{}, false
	}
	return cloneStats(c.st), true
}

// put keeps st, read at generation gen, unless an answer of a later
// generation is kept already.
func (c *statsCache) put(gen uint64, st msgsvc.Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok && c.gen > gen {
		return
	}
	c.ok, c.gen, c.st = true, gen, cloneStats(st)
}

// cloneStats copies st, so that no caller shares what the cache holds.
func cloneStats(st msgsvc.Stats) msgsvc.Stats {
	st.TopSenders = slices.Clone(st.TopSenders)
	st.FirstTS, st.LastTS = cloneString(st.FirstTS), cloneString(st.LastTS)
	return st
}

func cloneString(s *string) *string {
	if s == nil {
		return nil
	}
	c := *s
	return &c
}
