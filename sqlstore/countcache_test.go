package sqlstore

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestCountCache(t *testing.T) {
	k := countKey{text: "HELLO"}
	for _, c := range []struct {
		name     string
		puts     [][2]int64 // n, upTo
		wantN    int64
		wantUpTo int64
	}{
		{"one", [][2]int64{{5, 100}}, 5, 100},
		{"forward", [][2]int64{{5, 100}, {7, 120}}, 7, 120},
		{"an older count is dropped", [][2]int64{{7, 120}, {5, 100}}, 7, 120},
		{"the same id keeps the first", [][2]int64{{7, 120}, {7, 120}}, 7, 120},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cache countCache
			if _, _, ok := cache.get(k); ok {
				t.Fatal("an empty cache has an entry")
			}
			for _, p := range c.puts {
				cache.put(k, p[0], p[1])
			}
			n, upTo, ok := cache.get(k)
			if !ok || n != c.wantN || upTo != c.wantUpTo {
				t.Fatalf("get = %d, %d, %v; want %d, %d, true", n, upTo, ok, c.wantN, c.wantUpTo)
			}
		})
	}
}

func TestCountCacheBounded(t *testing.T) {
	var cache countCache
	for i := range countCacheEntries + 100 {
		cache.put(countKey{text: fmt.Sprint(i)}, int64(i), 1)
		if i == countCacheEntries-1 {
			cache.get(countKey{text: "0"}) // used last before the cache fills: stays
		}
	}
	if got := cache.len(); got != countCacheEntries {
		t.Fatalf("%d entries, want %d", got, countCacheEntries)
	}
	if _, _, ok := cache.get(countKey{text: "0"}); !ok {
		t.Error("the entry used recently was evicted")
	}
	if _, _, ok := cache.get(countKey{text: "1"}); ok {
		t.Error("the least recently used entry was kept")
	}
	if _, _, ok := cache.get(countKey{text: fmt.Sprint(countCacheEntries + 99)}); !ok {
		t.Error("the newest entry is missing")
	}
	long := countKey{from: "+12345", text: strings.Repeat("x", countKeyMaxLen)}
	cache.put(long, 1, 1)
	if _, _, ok := cache.get(long); ok {
		t.Error("a key longer than countKeyMaxLen was kept")
	}
}

func TestCountCacheConcurrent(t *testing.T) {
	var cache countCache
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := countKey{text: fmt.Sprint(i % 50)}
				cache.put(k, int64(i), int64(g*1000+i))
				if n, upTo, ok := cache.get(k); ok && (n < 0 || upTo < 0) {
					t.Errorf("get(%v) = %d, %d", k, n, upTo)
				}
			}
		}()
	}
	wg.Wait()
}
