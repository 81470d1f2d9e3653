package bench

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/puzpuzpuz/xsync/v3"
)

// BenchmarkClosureBesidePB shows why a hit path measured with
// b.RunParallel can take one of two costs from one run to the next while
// the code measured stays the same: each goroutine of RunParallel
// allocates its testing.PB (32 bytes) and writes it on every pb.Next; a
// closure of the same size class (a code pointer and 24 bytes of captured
// variables: a cache and a context, as in `func(k string) *R { v, _ :=
// c.Get(ctx, k); return v }`) may be allocated in the same 64-byte line as
// one goroutine's PB, and then every call from the other goroutine reads
// a line that the first one keeps writing. Both rows look up the same
// xsync map; the second one only captures a context besides the map, so
// that its closure is 32 bytes instead of 16. Run it with -cpu 2 -count 10:
// on 2026-12-03 the first row took 5.4-6.1 ns in ten runs, the second
// 5.6-13.7 ns, bimodal: 5.6-5.9 or 10.0-13.7 (see bench/README.md,
// section 1).
func BenchmarkClosureBesidePB(b *testing.B) {
	const n = 1024
	keys := make([]string, n)
	m := xsync.NewMapOf[string, *int]()
	for i := range keys {
		keys[i] = "tenant-" + strconv.Itoa(i)
		m.Store(keys[i], &i)
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.01, 1, n-1)
	stream := make([]int, 1<<16)
	for i := range stream {
		stream[i] = int(z.Uint64())
	}
	run := func(b *testing.B, get func(string) *int) {
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(stream))
			for pb.Next() {
				if get(keys[stream[i&(len(stream)-1)]]) == nil {
					panic("miss")
				}
				i++
			}
		})
	}
	b.Run("closure=16B", func(b *testing.B) {
		run(b, func(k string) *int { v, _ := m.Load(k); return v })
	})
	b.Run("closure=32B", func(b *testing.B) {
		ctx := context.Background()
		run(b, func(k string) *int {
			v, _ := m.Load(k)
			_ = ctx.Value(nil) // captured: the closure holds the map and the context
			return v
		})
	})
}
