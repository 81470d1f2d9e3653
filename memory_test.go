package rescache

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// heapPerEntry fills a cache built with opts with n keys (keys and the
// value allocated before) and returns the heap it takes per entry: the
// live heap filled minus empty, after a collection.
func heapPerEntry(t *testing.T, n int, opts Options[string, *resource]) float64 {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "tenant-" + strconv.Itoa(i)
	}
	v := new(resource)
	opts.Close = func(string, *resource) error { return nil }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := New(func(context.Context, string) (*resource, error) { return v, nil }, &opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		c.Get(context.Background(), k)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c.Len() != n {
		t.Fatalf("Len() = %d; want %d", c.Len(), n)
	}
	runtime.KeepAlive(keys)
	c.Close()
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// maxBytesPerEntry is the heap per entry that TestMemoryPerEntry allows:
// the 96-byte entry, its share of the table's buckets (4 to 8 bytes: one
// pointer per bucket, two entries per bucket before the table doubles) and
// its slot in the recency heap (8). otter v2 takes 113.6 bytes per entry
// measured the same way.
const maxBytesPerEntry = 114

// TestMemoryPerEntry measures the heap an entry takes with MaxEntries and
// IdleTimeout (the configuration of the README's comparison), at 100,000
// entries and at 65,537, just past a doubling of the table's buckets where
// their share is largest, and asserts the figure reached.
func TestMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a cache of 100,000 entries")
	}
	for _, n := range []int{100_000, 65_537} {
		got := heapPerEntry(t, n, Options[string, *resource]{MaxEntries: n, IdleTimeout: time.Hour})
		t.Logf("heap per entry at %d entries (MaxEntries, IdleTimeout): %.1f B; the entry struct is %d B", n, got, unsafe.Sizeof(entry[string, *resource]{}))
		if got > maxBytesPerEntry {
			t.Errorf("%d entries: %.1f bytes per entry; want at most %d", n, got, maxBytesPerEntry)
		}
	}
}
