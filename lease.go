package rescache

import (
	"context"
	"sync/atomic"
)

// Acquire returns the value for key like Get, with a lease: the value is not
// closed before release is called, even if its entry is evicted,
// invalidated or the cache closed meanwhile (the entry leaves the cache at
// once, so the next call builds a fresh value, and the old value is closed
// at its last release). Call release exactly once when done; later calls do
// nothing. On error, release is a no-op and is not nil.
func (c *Cache[K, V]) Acquire(ctx context.Context, key K) (v V, release func(), err error) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.use(e, w) && e.tryLease() {
			c.hot.add(1, 1, 0)
			return e.val, c.newLease(e), nil
		}
	}
	e, err := c.slow(ctx, key, true)
	if err != nil {
		var zero V
		return zero, noRelease, err
	}
	c.hot.add(0, 1, 0)
	return e.val, c.newLease(e), nil
}

func noRelease() {}

// lease is one Acquire's hold on an entry. Leases are reused through
// c.leaseP; gen tells one use from the next, so that a second call of a
// release func is a no-op even after its lease was reused.
type lease[K comparable, V any] struct {
	gen atomic.Uint64
	c   *Cache[K, V]
	e   *entry[K, V]
}

// newLease returns the release func of a lease already added to e's word
// (and counted in c.hot). The closure is the one allocation of an Acquire:
// it carries the generation that makes release idempotent.
func (c *Cache[K, V]) newLease(e *entry[K, V]) func() {
	l, _ := c.leaseP.Get().(*lease[K, V])
	if l == nil {
		l = &lease[K, V]{c: c}
	}
	l.e = e
	gen := l.gen.Load()
	return func() { l.release(gen) }
}

// release ends the lease if it is still at generation gen.
func (l *lease[K, V]) release(gen uint64) {
	if !l.gen.CompareAndSwap(gen, gen+1) {
		return // released already
	}
	c, e := l.c, l.e // ours until Put
	l.e = nil
	c.leaseP.Put(l)
	c.releaseEntry(e)
}

// releaseEntry drops one lease of e: the release is a use (the idle timeout
// runs from it), and the last lease of a removed entry closes its value on
// the releasing goroutine (a caller of that key); the last lease of an entry held past its idle deadline
// gives it back to the idle sweep.
func (c *Cache[K, V]) releaseEntry(e *entry[K, V]) {
	c.hot.add(0, 0, 1)
	if c.tick > 0 {
		c.touch(e)
	}
	switch w := e.word.Add(^uint64(0)); {
	case w == removedBit|valuedBit:
		c.closeValue(e.key, e.val, true)
	case w&leaseMask == 0 && e.parked.Load():
		c.unpark(e)
	}
}
