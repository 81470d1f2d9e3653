package rescache

import (
	"context"
	"sync/atomic"
)

// Lease is a hold on a cached value, returned by value: the value is not
// closed before the lease is released, even if its entry is evicted,
// invalidated or the cache closed meanwhile. The zero Lease holds nothing.
//
// A Lease may be copied; [Lease.Release] and [Lease.Discard] are idempotent
// across copies: the first call ends the lease, later calls on any copy do
// nothing, even after the cache reused the lease's internal state for
// another caller.
type Lease[K comparable, V any] struct {
	// Three words whatever K and V are: the entry stands for the key and
	// the value (both fixed once it is found, and kept by it after it
	// leaves the cache). The compiler keeps a struct of at most four words
	// in registers; a 40-byte Lease (string key, pointer value), returned
	// and passed by value, was copied through the stack twice per Lease +
	// Release: 66 against 40 ns at -cpu 1 (BenchmarkGetHit/Lease+Release).
	t   *leaseToken[K, V] // nil for the zero Lease
	gen uint64            // t's generation when the lease was taken
	e   *entry[K, V]      // the leased entry; nil for the zero Lease
}

// leaseToken is the state that the copies of a Lease share. Tokens are
// reused through Cache.tokens (unless leaks are tracked); gen tells one use
// from the next: a release that finds gen moved on is a stale copy's, and
// does nothing.
type leaseToken[K comparable, V any] struct {
	gen atomic.Uint64
	c   *Cache[K, V]
	e   *entry[K, V] // written by the taker, read by the one release that wins gen

	// track is the leak tracking of this use, when Options.LeakThreshold
	// is set; such tokens are never reused (see leak.go).
	track *leakTrack[K, V]
}

// Lease returns a lease on the value for key, building it if the key is
// absent and waiting for the build if one is running, with exactly the
// semantics of [Cache.Acquire]: if ctx ends while it waits, Lease returns
// ctx.Err() at once and the build goes on; after Close it returns
// [ErrClosed]. On error the returned Lease is the zero Lease.
//
// Call Release (or Discard) exactly once when done, typically with defer.
// A lease of a found key costs no allocation.
func (c *Cache[K, V]) Lease(ctx context.Context, key K) (Lease[K, V], error) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.use(e, w) && e.tryLease() {
			return c.newLease(e, 1), nil
		}
	}
	e, err := c.slow(ctx, key, true)
	if err != nil {
		return Lease[K, V]{}, err
	}
	return c.newLease(e, 0), nil
}

// Value returns the leased value; the zero V for the zero Lease. It stays
// valid after Release, but the value may then be closed.
func (l Lease[K, V]) Value() V {
	if l.e == nil {
		var zero V
		return zero
	}
	return l.e.val
}

// Key returns the key of the leased value; the zero K for the zero Lease.
func (l Lease[K, V]) Key() K {
	if l.e == nil {
		var zero K
		return zero
	}
	return l.e.key
}

// Release ends the lease: the release counts as a use of the entry (its
// idle time starts now), and if the entry left the cache and this was its
// last lease, the value is closed, on the calling goroutine (or, while the
// removal's OnEvict still runs, right after it returns, on its goroutine).
// Release is
// idempotent across copies of l, and does nothing for the zero Lease.
func (l Lease[K, V]) Release() {
	if e := l.end(); e != nil {
		l.t.c.dropLease(e)
	}
}

// Discard is Release for a value the caller found broken: it also removes
// the entry from the cache if the entry still holds this very value (never
// a newer build of the same key), with reason [EvictDiscarded], so that the
// next call builds a fresh value. The value is closed at its last release,
// so other holders finish their work on it first. Discard of a value whose
// entry already left is a Release. Like Release, it is idempotent across
// copies of l.
func (l Lease[K, V]) Discard() {
	e := l.end()
	if e == nil {
		return
	}
	c := l.t.c
	c.mu.Lock()
	var r removal[K, V]
	removed := false
	if e.idx() >= 0 {
		r, removed = c.removeLocked(e, EvictDiscarded), true
	}
	c.mu.Unlock()
	c.dropLease(e) // the removal's hold keeps the value open for OnEvict
	if removed {
		c.afterRemove(r)
	}
}

// end ends the lease if no copy ended it yet, counts its release in c.hot
// and gives its token back, and returns its entry, or nil. The caller then
// drops the entry's lease (Cache.dropLease).
func (l Lease[K, V]) end() *entry[K, V] {
	t := l.t
	if t == nil || !t.gen.CompareAndSwap(l.gen, l.gen+1) {
		return nil // the zero Lease, or released already
	}
	e := t.e
	t.e = nil
	if t.track != nil {
		t.track.end()
		t.c.hot.add(0, 0, 1)
		return e
	}
	t.c.leaseReleased(t)
	return e
}

// newLease returns a lease on e, whose word already counts it, and counts
// the lease in c.hot, with a hit when hits is 1 (which a TinyLFU cache also
// records in its read buffer). Without leak tracking it reuses a token: no
// allocation.
func (c *Cache[K, V]) newLease(e *entry[K, V], hits int64) Lease[K, V] {
	if c.opts.LeakThreshold > 0 {
		c.countLease(e, hits)
		return c.newTrackedLease(e)
	}
	t, wrapped := c.leaseTaken(e, hits)
	if wrapped >= 0 && c.reads.evicting.Load() {
		c.drainReads(wrapped)
	}
	if t == nil {
		t = &leaseToken[K, V]{c: c}
	}
	t.e = e
	return Lease[K, V]{t: t, gen: t.gen.Load(), e: e}
}

// countLease counts a lease taken on e in c.hot, with a hit when hits is 1,
// for a lease that takes no token from c.tokens (a tracked one).
func (c *Cache[K, V]) countLease(e *entry[K, V], hits int64) {
	if hits != 0 && c.reads != nil {
		if r := countHit(&c.hot, c.reads, e, 1); r >= 0 && c.reads.evicting.Load() {
			c.drainReads(r)
		}
		return
	}
	c.hot.add(hits, 1, 0)
}

// Acquire returns the value for key like Get, with a lease: the value is not
// closed before release is called, even if its entry is evicted,
// invalidated or the cache closed meanwhile (the entry leaves the cache at
// once, so the next call builds a fresh value, and the old value is closed
// at its last release). Call release exactly once when done; later calls do
// nothing. On error, release is a no-op and is not nil.
//
// Acquire is [Cache.Lease] with the lease's Release as a func; that func is
// its one allocation. Prefer Lease, which allocates nothing and can also
// Discard a broken value.
func (c *Cache[K, V]) Acquire(ctx context.Context, key K) (v V, release func(), err error) {
	l, err := c.Lease(ctx, key)
	if err != nil {
		return v, noRelease, err
	}
	// The closure keeps only the token and generation, not the entry: a
	// release func kept after it was called does not keep the entry and
	// its value reachable, as a method value of l would.
	t, gen := l.t, l.gen
	return l.e.val, func() { Lease[K, V]{t: t, gen: gen}.Release() }, nil
}

func noRelease() {}

// releaseEntry counts the release of a lease of e in c.hot and drops the
// lease (dropLease): the release of a lease whose token end does not take,
// a tracked lease the garbage collector found dropped.
func (c *Cache[K, V]) releaseEntry(e *entry[K, V]) {
	c.hot.add(0, 0, 1)
	c.dropLease(e)
}

// dropLease drops one lease of e, whose release is counted already: the
// release is a use (the idle timeout runs from it), and the last lease of a
// removed entry closes its value on the releasing goroutine (a caller of
// that key); the last lease of an entry held past its idle deadline gives
// it back to the idle sweep.
func (c *Cache[K, V]) dropLease(e *entry[K, V]) {
	if c.tick > 0 {
		c.touch(e)
	}
	switch closeNow, unpark := e.release(); {
	case closeNow:
		c.closeEntry(e)
	case unpark:
		c.unpark(e)
	}
}
