package contender

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// SeedLoad is the seed's benchmark: Requests requests spread round-robin
// over Tenants tenants, served by InFlight workers (so at most InFlight
// requests are in flight at once), where the first connect of each tenant
// takes a fixed time: evenly spread from Fastest (first tenant) to Slowest
// (last tenant). The lower bound of its wall time is Slowest: the slowest
// tenant must connect once, and everything else can overlap with it.
type SeedLoad struct {
	Requests int           // requests served; must be positive
	Tenants  int           // distinct keys; must be positive
	InFlight int           // workers serving requests; must be positive
	Fastest  time.Duration // connect time of the first tenant
	Slowest  time.Duration // connect time of the last tenant (the bound)
}

// DefaultSeedLoad is the seed's figures: 300 requests, 4 tenants, at most 60
// in flight, connects of 50, 116, 183 and 250 ms.
var DefaultSeedLoad = SeedLoad{
	Requests: 300,
	Tenants:  4,
	InFlight: 60,
	Fastest:  50 * time.Millisecond,
	Slowest:  250 * time.Millisecond,
}

// SeedResult is the outcome of one run of a SeedLoad.
type SeedResult struct {
	// Wall is the time from the first request to the last answer.
	Wall time.Duration
	// Connects counts builds (the minimum is the number of tenants).
	Connects int64
	// Errors counts requests that got an error or a value of another key.
	Errors int64
}

// Validate reports an invalid field of l.
func (l SeedLoad) Validate() error {
	switch {
	case l.Requests <= 0:
		return fmt.Errorf("requests must be positive, got %d", l.Requests)
	case l.Tenants <= 0:
		return fmt.Errorf("tenants must be positive, got %d", l.Tenants)
	case l.InFlight <= 0:
		return fmt.Errorf("inflight must be positive, got %d", l.InFlight)
	case l.Fastest < 0 || l.Slowest < l.Fastest:
		return fmt.Errorf("connect times must satisfy 0 <= fastest <= slowest, got %v and %v", l.Fastest, l.Slowest)
	}
	return nil
}

// Keys returns the tenants' keys, "tenant-0" to "tenant-<Tenants-1>".
func (l SeedLoad) Keys() []string {
	keys := make([]string, l.Tenants)
	for i := range keys {
		keys[i] = fmt.Sprintf("tenant-%d", i)
	}
	return keys
}

// Connects returns the connect time of each tenant, in the order of Keys.
func (l SeedLoad) Connects() []time.Duration {
	d := make([]time.Duration, l.Tenants)
	for i := range d {
		if l.Tenants == 1 {
			d[i] = l.Slowest
			continue
		}
		d[i] = l.Fastest + (l.Slowest-l.Fastest)*time.Duration(i)/time.Duration(l.Tenants-1)
	}
	return d
}

// Run serves l's requests with a fresh cache of c and reports how long it
// took. The cache is made before the clock starts and closed after it
// stops. Each request gets its tenant's value and releases it at once.
func (l SeedLoad) Run(ctx context.Context, c Contender) (SeedResult, error) {
	if err := l.Validate(); err != nil {
		return SeedResult{}, err
	}
	keys := l.Keys()
	connect := make(map[string]time.Duration, len(keys))
	for i, d := range l.Connects() {
		connect[keys[i]] = d
	}
	b := &Builder{Delay: func(key string) time.Duration { return connect[key] }}
	cache := c.New(b.Build, Config{})
	defer cache.Close()

	var (
		next   atomic.Int64 // index of the next request to serve
		errors atomic.Int64
		wg     sync.WaitGroup
	)
	start := time.Now()
	for range min(l.InFlight, l.Requests) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= l.Requests {
					return
				}
				key := keys[i%len(keys)]
				v, release, err := cache.Get(ctx, key)
				if err != nil || v == nil || v.Key != key {
					errors.Add(1)
				}
				release()
			}
		})
	}
	wg.Wait()
	return SeedResult{
		Wall:     time.Since(start),
		Connects: b.Counts.Builds.Load(),
		Errors:   errors.Load(),
	}, nil
}
