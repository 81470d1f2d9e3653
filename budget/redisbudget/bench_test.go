package redisbudget

import (
	"context"
	"testing"
	"time"

	"github.com/rescache/rescache/budget"
)

// BenchmarkAcquireRelease is the cost a connect and a close add through a
// budget: a place taken and given back, from one caller. With
// RESCACHE_REDIS_ADDR it measures the real round trips; on miniredis it
// measures the code path. The local budget is the baseline of the same run.
func BenchmarkAcquireRelease(b *testing.B) {
	ctx := context.Background()
	b.Run("local", func(b *testing.B) {
		l, _ := budget.NewLocal(10)
		for b.Loop() {
			l.Acquire(ctx)
			l.Release()
		}
	})
	b.Run("fleet", func(b *testing.B) {
		c, _ := redisFor(b)
		fb, err := New(Options{Client: c, Name: "bench-" + time.Now().Format("150405.000000"), Max: 10, Lease: 600 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		defer fb.Close()
		for fb.Stats().Fallback {
			time.Sleep(time.Millisecond)
		}
		fb.Acquire(ctx) // past the new store's settling
		fb.Release()
		for b.Loop() {
			fb.Acquire(ctx)
			fb.Release()
		}
	})
}
