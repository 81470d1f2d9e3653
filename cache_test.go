package rescache

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of cache.go: Invalidate of a pending key, and the hit path's
// allocations.

func TestInvalidatePendingKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var b builder
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (*resource, error) {
			if builds.Add(1) == 1 {
				<-release
			}
			return b.build(ctx, key)
		}, nil)

		type result struct {
			v       *resource
			release func()
		}
		waiters := make(chan result, 2)
		go func() {
			v, err := c.Get(context.Background(), "k")
			if err != nil {
				t.Error(err)
			}
			waiters <- result{v, nil}
		}()
		go func() {
			v, rel, err := c.Acquire(context.Background(), "k")
			if err != nil {
				t.Error(err)
			}
			waiters <- result{v, rel}
		}()
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Misses < 2 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		if !c.Invalidate("k") {
			t.Fatal("Invalidate of a pending key = false")
		}
		// A new caller starts a fresh build.
		fresh := mustGet(t, c, "k")
		if fresh.gen != 1 {
			t.Fatalf("new caller got build %d; want the fresh build (1st to finish)", fresh.gen)
		}
		close(release)
		r1, r2 := <-waiters, <-waiters
		if r1.release == nil {
			r1, r2 = r2, r1 // r1 is Acquire's, r2 Get's
		}
		// The Acquire waiter gets the invalidated build's value, which
		// its lease keeps open; the Get waiter, which holds no lease,
		// gets the fresh build's value instead.
		old := r1.v
		if old == fresh || r2.v != fresh {
			t.Fatalf("Acquire waiter got build %d, Get waiter build %d; want the invalidated build (2) and the fresh one (1)", old.gen, r2.v.gen)
		}
		if v, _ := c.Peek("k"); v != fresh {
			t.Fatal("the invalidated build's value was cached")
		}
		if old.closed() {
			t.Fatal("old value closed while an Acquire waiter leases it")
		}
		r1.release()
		if n := old.closes.Load(); n != 1 {
			t.Fatalf("old value closed %d times; want 1 after release", n)
		}
	})
}

// Performance: a hit allocates nothing.
func TestGetHitAllocatesNothing(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 10, IdleTimeout: time.Minute})
	mustGet(t, c, "k")
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { c.Get(ctx, "k") }); n != 0 {
		t.Fatalf("Get of a found key allocates %v times; want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { c.Peek("k") }); n != 0 {
		t.Fatalf("Peek allocates %v times; want 0", n)
	}
}
