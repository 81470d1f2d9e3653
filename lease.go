package rescache

import (
	"context"
	"sync/atomic"

	"github.com/rescache/rescache/internal/percpu"
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

	// slot is the slot of Cache.leases that counts this use's lease, or
	// -1 when e's word counts it; written by the taker, like e.
	slot int32

	// A token is written (gen, e, slot) by each lease and release; tokens
	// move between the Ps' stacks as goroutines move, so two tokens on
	// one cache line could be written by two Ps at once. The padding
	// gives each its own line: at -cpu 2, without it, the gen
	// compare-and-swap of Release took 30% of BenchmarkHotKeys's
	// Lease+Release time.
	_ [28]byte
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
		if w := e.word.Load(); found(w) && c.use(e, w) {
			if l, ok := c.leaseHit(e); ok {
				return l, nil
			}
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
	if e, slot := l.end(); e != nil {
		l.t.c.dropLease(e, slot)
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
	e, slot := l.end()
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
	c.dropLease(e, slot) // the removal's hold keeps the value open for OnEvict
	if removed {
		c.afterRemove(r)
	}
}

// end ends the lease if no copy ended it yet, counts its release in c.hot
// and gives its token back, and returns its entry, or nil, and the slot of
// Cache.leases that counts the lease (-1: the entry's word). The caller
// then drops the entry's lease (Cache.dropLease).
func (l Lease[K, V]) end() (*entry[K, V], int32) {
	t := l.t
	if t == nil || !t.gen.CompareAndSwap(l.gen, l.gen+1) {
		return nil, -1 // the zero Lease, or released already
	}
	e, slot := t.e, t.slot
	t.e = nil
	if t.track != nil {
		t.track.end()
		t.c.hot.add(0, 0, 1)
		return e, -1
	}
	t.c.leaseReleased(t)
	return e, slot
}

// leaseHit takes a lease on the found entry e for a hit of Lease, and
// reports false when e was removed (or, with leak tracking, failed)
// meanwhile: Lease then takes the slow path.
//
// Without leak tracking, the lease is counted in this P's slot of
// c.leases when the slot is free for e (percpu.Counts), else in e's word;
// either way, in the pin that also counts it in c.hot and takes its token
// (leasePinned). A lease counted in a slot is taken before the check that
// e was not removed (see the table in entry.go): if it was, the lease is
// given back, and if the removal's Freeze moved it into e's word already,
// it is dropped from there, which may close the value (on this goroutine,
// a caller of e's key, after the unpin).
func (c *Cache[K, V]) leaseHit(e *entry[K, V]) (Lease[K, V], bool) {
	if c.opts.LeakThreshold > 0 {
		if !e.tryLease() {
			return Lease[K, V]{}, false
		}
		return c.newLease(e, 1), true
	}
	p := percpu.Pin()
	slot := c.leases.AcquirePinned(p, e, e.hash)
	if slot >= 0 {
		if e.removed() {
			moved := c.leases.Release(slot)
			percpu.Unpin()
			if moved {
				c.dropLease(e, -1)
			}
			return Lease[K, V]{}, false
		}
	} else if !e.tryLease() {
		percpu.Unpin()
		return Lease[K, V]{}, false
	}
	t, wrapped := c.leasePinned(p, e, 1)
	percpu.Unpin()
	return c.leaseWith(t, wrapped, e, slot), true
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
	return c.leaseWith(t, wrapped, e, -1)
}

// leaseWith returns the lease on e, counted in slot of c.leases (-1: in
// e's word), with the token t that leaseTaken or leasePinned gave (nil:
// a new one), after the drain of the read buffer's ring that has just
// wrapped (-1: none).
func (c *Cache[K, V]) leaseWith(t *leaseToken[K, V], wrapped int, e *entry[K, V], slot int32) Lease[K, V] {
	if wrapped >= 0 && c.reads.evicting.Load() {
		c.drainReads(wrapped)
	}
	if t == nil {
		t = &leaseToken[K, V]{c: c}
	}
	t.e, t.slot = e, slot
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
	c.dropLease(e, -1)
}

// dropLease drops one lease of e, whose release is counted already, from
// slot of c.leases (-1: from e's word): the release is a use (the idle
// timeout runs from it), and the last lease of a removed entry closes its
// value on the releasing goroutine (a caller of that key); the last lease
// of an entry held past its idle deadline gives it back to the idle sweep.
// A lease that a slot counted is dropped there, unless Freeze moved it
// into e's word (e was removed or parked since): then it is dropped from
// the word, where those two decisions are taken.
func (c *Cache[K, V]) dropLease(e *entry[K, V], slot int32) {
	if c.tick > 0 {
		c.touch(e)
	}
	if slot >= 0 && !c.leases.Release(slot) {
		return
	}
	switch closeNow, unpark := e.release(); {
	case closeNow:
		c.closeEntry(e)
	case unpark:
		c.unpark(e)
	}
}
