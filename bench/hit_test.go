package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// hitConfig is the configuration of every cache on the hit path: a bound
// and an idle timeout that nothing reaches, so that the contenders that
// support them pay for keeping recency and expiry.
var hitConfig = contender.Config{MaxEntries: 4096, IdleTimeout: 10 * time.Minute}

// hitRows are the rows of the hit-path benchmarks, the floor first.
var hitRows = []contender.Contender{
	contender.Floor,        // xsync.MapOf.Load
	contender.Singleflight, // sync.Map.Load
	contender.Channels,     // RWMutex map, the seed's channels design
	contender.Otter,
	contender.LRU,
	contender.Expirable,
	contender.TTLCache,
	contender.LazyCache,
	contender.Rescache,
	contender.RescacheAcquire,
}

// BenchmarkHitPath is benchmark 1: b.RunParallel over 1,024 found keys,
// walked in a Zipf stream from a random offset per goroutine. One op is one
// Get (and release) of a found key. Every row, the floor included, is
// called through the same contender.Cache interface.
func BenchmarkHitPath(b *testing.B) {
	keys := tenantKeys(1024)
	stream := zipfStream(keys, streamN)
	for _, c := range hitRows {
		b.Run(c.Name, func(b *testing.B) { benchHits(b, c, keys, stream) })
	}
}

// BenchmarkHotTenant is benchmark 2: the hit path with only 4 keys, so that
// every goroutine hammers the same entries and contended cache lines show.
func BenchmarkHotTenant(b *testing.B) {
	keys := tenantKeys(4)
	stream := zipfStream(keys, streamN)
	for _, c := range hitRows {
		b.Run(c.Name, func(b *testing.B) { benchHits(b, c, keys, stream) })
	}
}

// benchHits times Get and release of found keys from stream on a cache of
// c warmed with keys.
func benchHits(b *testing.B, c contender.Contender, keys, stream []string) {
	built := new(contender.Builder)
	cache := c.New(built.Build, hitConfig)
	defer cache.Close()
	warm(b, cache, keys)
	warmBuilds := built.Counts.Builds.Load()

	var (
		w      walker
		failed atomic.Int64
	)
	const mask = streamN - 1
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := w.start(streamN)
		for pb.Next() {
			v, release, err := cache.Get(ctx, stream[i&mask])
			if err != nil || v == nil {
				failed.Add(1)
			}
			release()
			i++
		}
	})
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Errorf("%d Gets of found keys failed", n)
	}
	if n := built.Counts.Builds.Load() - warmBuilds; n > 0 {
		b.ReportMetric(float64(n)/float64(b.N), "builds/op")
	}
}
