package bench

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// The key stream: every benchmark draws its keys from a Zipf distribution
// (a few hot tenants, a long tail) with a fixed seed, before the clock
// starts.
// The streams are contender.ZipfStream's, shared with the seedtable
// command.
const (
	zipfSeed = contender.ZipfSeed
	streamN  = 1 << 14 // length of a hit-path stream (a power of two)
)

// tenantKeys returns n distinct keys, "tenant-00000" and so on.
func tenantKeys(n int) []string { return contender.TenantKeys(n) }

// zipfStream returns n keys drawn from keys with a Zipf distribution, the
// first key the most frequent.
func zipfStream(keys []string, n int) []string { return contender.ZipfStream(keys, n) }

// walker hands out random starting offsets into a stream, one per
// goroutine, from a fixed seed.
type walker struct{ seq atomic.Uint64 }

// start returns a random offset for the next goroutine.
func (w *walker) start(n int) int {
	r := rand.New(rand.NewPCG(zipfSeed, w.seq.Add(1)))
	return r.IntN(n)
}

// sharedValue is returned by builds whose cost must not include the value
// itself (the memory and miss-path benchmarks).
var sharedValue = &contender.Resource{Key: "shared"}

// countingBuild returns a build that returns sharedValue at once and the
// counter of its calls.
func countingBuild() (contender.BuildFunc, *atomic.Int64) {
	var n atomic.Int64
	return func(context.Context, string) (*contender.Resource, error) {
		n.Add(1)
		return sharedValue, nil
	}, &n
}

// warm gets every key once, so that each is found, and fails b if one is
// not served.
func warm(tb testing.TB, c contender.Cache, keys []string) {
	tb.Helper()
	ctx := context.Background()
	for _, k := range keys {
		v, release, err := c.Get(ctx, k)
		if err != nil || v == nil {
			tb.Fatalf("Get(%q) = %v, %v; want a value", k, v, err)
		}
		release()
	}
}

// usage is what a run of useStream saw.
type usage struct {
	requests       atomic.Int64
	errors         atomic.Int64 // errors, nil values and values of another key
	usedAfterClose atomic.Int64 // requests whose value was closed while in use
}

// useStream serves requests from stream with goroutines goroutines until
// next returns false: each request gets its key's value, checks that it is
// open, uses it for use (a sleep; none when 0), checks again, and releases
// it. next is called by every goroutine before every request.
func useStream(c contender.Cache, stream []string, goroutines int, use time.Duration, next func() bool) *usage {
	u := new(usage)
	var w walker
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() { useLoop(c, stream, w.start(len(stream)), use, u, next) })
	}
	wg.Wait()
	return u
}

// useLoop is one goroutine of useStream, starting at offset i.
func useLoop(c contender.Cache, stream []string, i int, use time.Duration, u *usage, next func() bool) {
	ctx := context.Background()
	for next() {
		key := stream[i%len(stream)]
		i++
		u.requests.Add(1)
		v, release, err := c.Get(ctx, key)
		if err != nil || v == nil || v.Key != key {
			u.errors.Add(1)
			release()
			continue
		}
		closed := v.Closed()
		if use > 0 {
			time.Sleep(use)
		}
		if closed || v.Closed() {
			u.usedAfterClose.Add(1)
		}
		release()
	}
}

// countdown returns a next function for useStream that says yes n times in
// all, across goroutines.
func countdown(n int64) func() bool {
	var left atomic.Int64
	left.Store(n)
	return func() bool { return left.Add(-1) >= 0 }
}

// heapInUse returns the bytes of live heap objects after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// mallocs returns the number of heap allocations so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
