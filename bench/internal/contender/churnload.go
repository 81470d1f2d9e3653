package contender

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ChurnLoad is benchmark 4 (BenchmarkChurn) as a fixed number of requests:
// many more tenants than the bound, so that values are evicted and closed
// all the time, some of them while a request is using them. Requests keys
// are drawn from a Zipf stream over Tenants keys and served by Workers
// goroutines; each request gets its key's value, checks that it is open,
// uses it for Use, checks again, and releases it.
type ChurnLoad struct {
	Tenants    int           // distinct keys
	MaxEntries int           // the cache's bound
	Requests   int           // requests served after the warm-up
	Workers    int           // goroutines serving requests
	Build      time.Duration // time a build takes
	Use        time.Duration // time a request holds its value
}

// DefaultChurnLoad is BenchmarkChurn's setting: 10,000 tenants, at most 500
// cached, build 100 µs, use 50 µs, 64 goroutines; 200,000 requests.
var DefaultChurnLoad = ChurnLoad{
	Tenants:    10_000,
	MaxEntries: 500,
	Requests:   200_000,
	Workers:    64,
	Build:      100 * time.Microsecond,
	Use:        50 * time.Microsecond,
}

// ChurnResult is what one run of a ChurnLoad measured.
type ChurnResult struct {
	// Requests counts requests served (after the warm-up).
	Requests int64
	// UsedAfterClose counts requests whose value was closed while they
	// held it (found closed when handed out, or after the use).
	UsedAfterClose int64
	// Errors counts requests that got an error, no value or the value of
	// another key.
	Errors int64
	// Builds and Closes count builds and closes during the requests.
	Builds, Closes int64
	// DoubleCloses counts values closed twice.
	DoubleCloses int64
	// Wall is the time the requests took.
	Wall time.Duration
}

// Validate reports an invalid field of l.
func (l ChurnLoad) Validate() error {
	if l.Tenants < 2 || l.MaxEntries <= 0 || l.Requests <= 0 || l.Workers <= 0 || l.Build < 0 || l.Use < 0 {
		return fmt.Errorf("churn load needs at least 2 tenants and positive bound, requests and workers, got %+v", l)
	}
	return nil
}

// Run serves l's requests with a fresh cache of c, after a warm-up of
// 4*MaxEntries requests that fills it past its bound.
func (l ChurnLoad) Run(ctx context.Context, c Contender) (ChurnResult, error) {
	if err := l.Validate(); err != nil {
		return ChurnResult{}, err
	}
	stream := ZipfStream(TenantKeys(l.Tenants), 1<<16)
	b := &Builder{Delay: func(string) time.Duration { return l.Build }}
	cache := c.New(b.Build, Config{MaxEntries: l.MaxEntries})
	defer cache.Close()

	var seq atomic.Int64
	serve := func(n int64, res *ChurnResult) {
		var left atomic.Int64
		left.Store(n)
		var wg sync.WaitGroup
		for range l.Workers {
			// Each worker walks the stream from its own offset.
			i := int(seq.Add(7919)) % len(stream)
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					key := stream[i%len(stream)]
					i++
					v, release, err := cache.Get(ctx, key)
					if err != nil || v == nil || v.Key != key {
						atomic.AddInt64(&res.Errors, 1)
						release()
						continue
					}
					closed := v.Closed()
					if l.Use > 0 {
						time.Sleep(l.Use)
					}
					if closed || v.Closed() {
						atomic.AddInt64(&res.UsedAfterClose, 1)
					}
					release()
				}
			})
		}
		wg.Wait()
	}
	serve(int64(4*l.MaxEntries), &ChurnResult{})

	builds0, closes0, double0 := b.Counts.Builds.Load(), b.Counts.Closes.Load(), b.Counts.DoubleCloses.Load()
	var res ChurnResult
	start := time.Now()
	serve(int64(l.Requests), &res)
	res.Wall = time.Since(start)
	res.Requests = int64(l.Requests)
	res.Builds = b.Counts.Builds.Load() - builds0
	res.Closes = b.Counts.Closes.Load() - closes0
	res.DoubleCloses = b.Counts.DoubleCloses.Load() - double0
	return res, nil
}

// Closers lists, in the second table's order, the contenders that close
// the values they evict: every bounded contender. rescache appears twice,
// through Acquire (leases) and through Get.
var Closers = []Contender{
	RescacheAcquire, Rescache,
	Otter, LRU, Expirable, TTLCache, LazyCache,
}
