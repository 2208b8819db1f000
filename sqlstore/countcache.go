package sqlstore

import (
	"container/list"
	"sync"
)

// Exact counts of text searches, remembered per database.
//
// Counting every match of a common q is most of a search's cost, and a
// client paging through the results asks for the same count on every page.
// Messages are only ever appended, each with an id above every id committed
// before it (an INTEGER PRIMARY KEY without AUTOINCREMENT takes max(id)+1,
// and rows are never deleted or updated), so the number of matches among the
// rows with id <= upTo never changes once a snapshot holding upTo is
// committed. A later snapshot's count is that number plus the matches above
// upTo, which a range of the rowid b-tree answers. A snapshot older than an
// entry (its largest id below upTo) cannot use it and counts by itself.

// countCacheEntries bounds the number of remembered counts.
const countCacheEntries = 4096

// countKeyMaxLen is the longest from+q (in bytes) whose count is
// remembered; with countCacheEntries it bounds the cache's memory to a few
// MiB.
const countKeyMaxLen = 512

// countDeltaMax is the most rows above a remembered count that a search
// tests one by one to bring it up to date; further behind, it counts anew.
const countDeltaMax = 2048

// countKey names one count: the filters of a List call that decide its
// total (not its position or page).
type countKey struct {
	from  string // sender, "" for any
	since string // msgsvc.InstantKey of since, "" for none
	text  string // msgsvc.Fold of q
}

type countEntry struct {
	key  countKey
	n    int64 // matches among the rows with id <= upTo
	upTo int64
}

// countCache is a bounded LRU of exact counts. Its zero value is empty and
// ready to use; it is safe for concurrent use.
type countCache struct {
	mu      sync.Mutex
	entries map[countKey]*list.Element // of *countEntry
	order   list.List                  // most recently used first
}

func (k countKey) cacheable() bool {
	return len(k.from)+len(k.since)+len(k.text) <= countKeyMaxLen
}

// get returns the count remembered for k: n matches among the rows with
// id <= upTo.
func (c *countCache) get(k countKey) (n, upTo int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return 0, 0, false
	}
	c.order.MoveToFront(el)
	e := el.Value.(*countEntry)
	return e.n, e.upTo, true
}

// put remembers that n rows with id <= upTo match k. A count up to a
// smaller id than the one remembered is dropped: entries only move forward.
func (c *countCache) put(k countKey, n, upTo int64) {
	if !k.cacheable() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.order.MoveToFront(el)
		if e := el.Value.(*countEntry); upTo > e.upTo {
			e.n, e.upTo = n, upTo
		}
		return
	}
	if c.entries == nil {
		c.entries = make(map[countKey]*list.Element)
	}
	c.entries[k] = c.order.PushFront(&countEntry{key: k, n: n, upTo: upTo})
	for c.order.Len() > countCacheEntries {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*countEntry).key)
	}
}

// clear forgets every count.
func (c *countCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.order.Init()
}

// len returns the number of remembered counts.
func (c *countCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
