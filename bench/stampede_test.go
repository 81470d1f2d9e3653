package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// The cold stampede: stampedeCallers callers arrive at once at an empty
// cache, spread evenly over stampedeKeys keys whose build takes
// stampedeBuild.
const (
	stampedeCallers = 10_000
	stampedeKeys    = 64
	stampedeBuild   = 20 * time.Millisecond
)

// stampedeRows are the rows of the cold-stampede benchmark.
var stampedeRows = []contender.Contender{
	contender.Rescache,
	contender.Singleflight,
	contender.Otter,
	contender.LazyCache,
	contender.TTLCache,
}

// BenchmarkColdStampede is benchmark 3. One op is one stampede on a fresh
// cache: ns/op is its makespan (also reported as makespan-ms), builds/op
// must be 64, and allocs/waiter is the heap allocations of the op divided
// by the 10,000 callers. The callers are goroutines started before the
// clock, released together by closing a channel; the cache is made with
// the clock stopped.
func BenchmarkColdStampede(b *testing.B) {
	keys := tenantKeys(stampedeKeys)
	for _, c := range stampedeRows {
		b.Run(c.Name, func(b *testing.B) { benchStampede(b, c, keys) })
	}
}

// stampede is one op of BenchmarkColdStampede. cache is written before
// start is closed and read by the callers only after.
type stampede struct {
	start chan struct{}
	cache contender.Cache
	done  sync.WaitGroup
}

func benchStampede(b *testing.B, c contender.Contender, keys []string) {
	rounds := make([]*stampede, b.N)
	for i := range rounds {
		rounds[i] = &stampede{start: make(chan struct{})}
		rounds[i].done.Add(stampedeCallers)
	}
	var wrong atomic.Int64
	var callers sync.WaitGroup
	for i := range stampedeCallers {
		key := keys[i%len(keys)]
		callers.Go(func() {
			ctx := context.Background()
			for _, r := range rounds {
				<-r.start
				v, release, err := r.cache.Get(ctx, key)
				if err != nil || v == nil || v.Key != key {
					wrong.Add(1)
				}
				release()
				r.done.Done()
			}
		})
	}

	built := &contender.Builder{Delay: func(string) time.Duration { return stampedeBuild }}
	var allocs uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for _, r := range rounds {
		r.cache = c.New(built.Build, contender.Config{})
		before := mallocs()
		b.StartTimer()
		close(r.start)
		r.done.Wait()
		b.StopTimer()
		allocs += mallocs() - before
		r.cache.Close()
	}
	callers.Wait()

	if n := wrong.Load(); n > 0 {
		b.Errorf("%d callers got an error or a wrong value", n)
	}
	n := float64(b.N)
	b.ReportMetric(float64(built.Counts.Builds.Load())/n, "builds/op")
	b.ReportMetric(float64(b.Elapsed())/n/float64(time.Millisecond), "makespan-ms")
	b.ReportMetric(float64(allocs)/n/stampedeCallers, "allocs/waiter")
}
