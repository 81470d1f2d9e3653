package bench

import (
	"context"
	"testing"

	"github.com/puzpuzpuz/xsync/v3"
	"github.com/rescache/rescache"

	"github.com/rescache/rescache/bench/internal/contender"
)

// BenchmarkHitPathDirect is the hit path of benchmark 1 for the floor and
// rescache only, called directly instead of through the contender.Cache
// interface: the same keys and stream, without the one indirect call that
// every row of BenchmarkHitPath pays. Compare its ratios with those of
// BenchmarkHitPath to see what the interface costs.
func BenchmarkHitPathDirect(b *testing.B) {
	keys := tenantKeys(1024)
	stream := zipfStream(keys, streamN)
	const mask = streamN - 1
	ctx := context.Background()

	b.Run("xsync-floor", func(b *testing.B) {
		m := xsync.NewMapOf[string, *contender.Resource]()
		for _, k := range keys {
			m.Store(k, &contender.Resource{Key: k})
		}
		var w walker
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := w.start(streamN)
			for pb.Next() {
				if _, ok := m.Load(stream[i&mask]); !ok {
					panic("key not found")
				}
				i++
			}
		})
	})

	newCache := func(b *testing.B) *rescache.Cache[string, *contender.Resource] {
		built := new(contender.Builder)
		c, err := rescache.New(built.Build, &rescache.Options[string, *contender.Resource]{
			MaxEntries:  hitConfig.MaxEntries,
			IdleTimeout: hitConfig.IdleTimeout,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		for _, k := range keys {
			if _, err := c.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		return c
	}

	b.Run("rescache-Get", func(b *testing.B) {
		c := newCache(b)
		var w walker
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := w.start(streamN)
			for pb.Next() {
				if _, err := c.Get(ctx, stream[i&mask]); err != nil {
					panic(err)
				}
				i++
			}
		})
	})

	b.Run("rescache-Acquire", func(b *testing.B) {
		c := newCache(b)
		var w walker
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := w.start(streamN)
			for pb.Next() {
				_, release, err := c.Acquire(ctx, stream[i&mask])
				if err != nil {
					panic(err)
				}
				release()
				i++
			}
		})
	})
}
