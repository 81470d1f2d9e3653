package rescache

import (
	"context"
	"slices"
	"sync"
)

// Recency is recorded without a lock: a hit stores the clock in the entry's
// used stamp (only when the stamp is older than the clock, so a hot entry is
// written at most once per tick). The order is repaired lazily, when an
// eviction looks at it: the LRU policy's order (lruPolicy.order, policy.go)
// is a min-heap of found entries by nodeUsed,
// the stamp each had when it was last placed; an entry at the top whose used
// stamp moved on is placed again (fix) and the next one is looked at.
// An entry at the top that was not used since its placement is the least
// recently used one, since every other entry's stamp is at least its own
// nodeUsed, which is at least the top's. Each use costs at most one re-place,
// at the next eviction that reaches the entry, so an eviction costs
// O(log n) per entry used since it was placed, not O(n).
//
// Uses within the same tick get the same stamp, so among entries last used
// in the same tick the eviction order is unspecified.
//
// An entry that the idle sweep finds leased past its idle deadline is not
// idle, but it keeps its LRU rank (a lease is not a use): the sweep moves it
// to c.parked, a second heap ordered the same way, so that later sweeps do
// not look at it again while the lease lasts; its last release moves it
// back (see unpark). Capacity eviction takes the least recently used entry
// of both heaps.
//
// With TinyLFU (tinylfu.go) the same heaps and the same repair order each
// of its three segments, which take the place of the LRU order: each policy
// sits behind Cache.policy (policy.go).
//
// golang-lru's list orders by the calls to Get, which need its lock on every
// hit; a stamp and a heap keep the hit path lock-free and still evict exactly
// by last use, to the clock's resolution. (golang-lru's simplelru bounds the
// failed entries kept by ErrorTTL, which are added and removed under c.mu
// only.)
// heapOfLocked returns the heap that holds the found entry e.
func (c *Cache[K, V]) heapOfLocked(e *entry[K, V]) *recency[K, V] {
	if e.parked() {
		return &c.parked
	}
	return c.policy.heapOfLocked(e)
}

// insertLocked makes e, whose build just succeeded, a found entry.
func (c *Cache[K, V]) insertLocked(e *entry[K, V]) {
	e.nodeUsed = e.used.Load()
	c.policy.enterLocked(e)
	c.heapOfLocked(e).push(e)
	if c.lifetime > 0 {
		c.byAge.push(e)
	}
	c.ctr.entries.Add(1)
}

// removeLocked takes the found entry e out of the cache with a hold that
// keeps its value open until its OnEvict has run: pass the result to
// c.hooks.notify after the unlock (or, in Close, call OnEvict and drop the
// hold there).
func (c *Cache[K, V]) removeLocked(e *entry[K, V], reason EvictReason) removal[K, V] {
	c.heapOfLocked(e).remove(e.idx())
	e.unparkBit() // before removedBit: a removed entry is never parked
	if e.life != nil && e.life.idx >= 0 {
		c.byAge.remove(int(e.life.idx))
	}
	c.deleteIfSame(e)
	c.ctr.entries.Add(-1)
	c.ctr.evictions[reason].Add(1)
	e.removeHeld()
	// Every lease of e in the word, before the leasedGone check below and
	// before the removal's hold is dropped (see entry.go).
	c.leases.Freeze(e, e.hash, e.addLeases)
	if e.word.Load()&leaseMask != 0 {
		if c.leasedGone == nil {
			c.leasedGone = make(map[*entry[K, V]]struct{})
		}
		c.leasedGone[e] = struct{}{}
	}
	return removal[K, V]{e, reason}
}

// evict removes the found entry e for reason, unless it left already, and
// runs its OnEvict (and its close, if nothing holds it) on the calling
// goroutine: a caller of e's own key, or a health check of e.
func (c *Cache[K, V]) evict(e *entry[K, V], reason EvictReason) bool {
	c.mu.Lock()
	if e.idx() < 0 {
		c.mu.Unlock()
		return false
	}
	r := c.removeLocked(e, reason)
	c.mu.Unlock()
	c.afterRemove(r)
	return true
}

// makeRoomLocked removes entries, as the policy chooses, until one more
// fits within MaxEntries. Making room before the insert (not after) keeps
// Len within MaxEntries even for a reader that does not take c.mu.
func (c *Cache[K, V]) makeRoomLocked() []removal[K, V] {
	if c.opts.MaxEntries == 0 {
		return nil
	}
	return c.policy.makeRoomLocked(c)
}

// topLocked returns the least recently used entry of h, or nil.
func topLocked[K comparable, V any](h *recency[K, V]) *entry[K, V] {
	for len(*h) > 0 {
		e := (*h)[0]
		if u := e.used.Load(); u > e.nodeUsed {
			e.nodeUsed = u
			h.fix(0)
			continue
		}
		return e
	}
	return nil
}

// oldestLocked returns the least recently used found entry that is not
// parked (nil if there is none), and the heap at whose top it is.
func (c *Cache[K, V]) oldestLocked() (*recency[K, V], *entry[K, V]) {
	return c.policy.oldestLocked()
}

// unparkedLocked returns the heaps of the found entries that are not
// parked: the LRU order, or TinyLFU's segments.
func (c *Cache[K, V]) unparkedLocked() []*recency[K, V] {
	return c.policy.unparkedLocked()
}

// unpark moves e, whose last lease was just released, from c.parked back
// to its policy's heap, where the idle sweep sees it again. It is called only for
// entries that were leased past their idle deadline, so its lock is off
// the common release path.
func (c *Cache[K, V]) unpark(e *entry[K, V]) {
	c.mu.Lock()
	if e.parked() && e.idx() >= 0 && e.word.Load()&leaseMask == 0 {
		c.parked.remove(e.idx())
		e.unparkBit()
		e.nodeUsed = e.used.Load()
		c.heapOfLocked(e).push(e)
	}
	c.mu.Unlock()
}

// sweep evicts the entries expired at clock now, and forgets expired errors.
// Its cost is the number of entries that expired or were used since the
// last time they were looked at, plus the leases that outlived an idle
// deadline since the last sweep, not the number of entries; it returns how
// many entries it looked at (besides repairs of the LRU order). It runs no
// user code: the OnEvicts and closes go to the hook runner.
func (c *Cache[K, V]) sweep(now int64) (looked int) {
	var out []removal[K, V]
	c.mu.Lock()
	if c.lifetime > 0 {
		for len(c.byAge) > 0 {
			looked++
			e := c.byAge[0]
			if now < e.life.deadline {
				break
			}
			out = append(out, c.removeLocked(e, EvictLifetime))
		}
	}
	c.policy.tickLocked(now, len(c.parked))
	if c.idle > 0 {
		for {
			h, e := c.oldestLocked()
			if e == nil {
				break
			}
			looked++
			if now-e.nodeUsed < c.idle {
				break
			}
			// Every lease of e in the word, where its release sees the
			// park (see entry.go).
			c.leases.Freeze(e, e.hash, e.addLeases)
			if e.word.Load()&leaseMask != 0 {
				// Leased: not idle. Park it until its last release,
				// unless that release came before the mark (park and
				// release change the same word, so one of them sees
				// the other).
				if !e.park() {
					e.unparkBit()
					break
				}
				h.pop()
				c.parked.push(e)
				continue
			}
			out = append(out, c.removeLocked(e, EvictIdle))
		}
	}
	if c.errs != nil {
		for {
			_, e, ok := c.errs.GetOldest()
			if !ok || now < e.pending.Load().until {
				break
			}
			c.errs.RemoveOldest() // calls deleteIfSame
		}
	}
	c.mu.Unlock()
	c.hooks.notify(out...)
	return looked
}

// closeBacklog is how many units of room (see room) a cache has beyond
// MaxEntries: values being built, or removed and waiting for their OnEvict
// and Close, at once, when the cache is full. MaxConcurrentBuilds, when
// larger, takes its place, so that room never limits builds more than the
// slots do.
const closeBacklog = 16

// room bounds the values that MaxEntries governs: found entries, values
// removed and not yet closed, and builds in progress, to MaxEntries +
// max(MaxConcurrentBuilds, closeBacklog) units. Without it a churn of new
// keys would queue evicted values on the hook goroutine faster than a slow
// Close closes them, and the values open would grow without bound.
//
// A build takes a unit before it runs (reserve, which waits while every
// unit is taken; a nested build takes one at once, see runBuild) and keeps
// it until finish, where the cached entry keeps it. A found entry's unit
// is given back (free) when its removal is done: after the close, or at
// once if a lease (or a running health check) keeps the value open; a
// lease's value is then closed by its last release, on its own key's
// goroutine. A build that fails, or whose value is not cached, gives its
// unit back when finish is done with it. So at every instant
//
//	values open <= MaxEntries + max(MaxConcurrentBuilds, closeBacklog)
//	               + removed values kept open by a lease or a health check
//	               + values of nested builds that took a unit past max, until closed
//
// A caller of a found key never touches room; a build waits for it on its
// own goroutine (or on a caller whose ctx cannot end anyway), and only
// Close ends that wait; callers whose ctx ends leave meanwhile. Without
// MaxEntries, room is off (max == 0) and costs nothing.
//
// x/sync's semaphore does the same, but the core module requires nothing
// beyond golang-lru, and a nested build must take a unit past
// the limit (take), which a weighted semaphore does not allow.
type room struct {
	max int // MaxEntries + max(MaxConcurrentBuilds, closeBacklog); 0 = off. Read-only after New.

	mu      sync.Mutex      // guards n and waiters
	n       int             // units taken; above max only by take
	waiters []chan struct{} // reserves waiting, first come first served; a unit is handed over by closing the channel
}

// reserve takes a unit, waiting until one is free or ctx ends; it reports
// whether it took one.
func (r *room) reserve(ctx context.Context) bool {
	if r.max == 0 {
		return true
	}
	r.mu.Lock()
	if r.n < r.max && len(r.waiters) == 0 {
		r.n++
		r.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	r.waiters = append(r.waiters, ch)
	r.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	}
	r.mu.Lock()
	for i, w := range r.waiters {
		if w == ch {
			r.waiters = slices.Delete(r.waiters, i, i+1)
			r.mu.Unlock()
			return false
		}
	}
	r.mu.Unlock()
	r.free() // handed a unit while ctx ended: give it on
	return false
}

// take takes a unit without waiting, past max if need be.
func (r *room) take() {
	if r.max == 0 {
		return
	}
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

// free gives a unit back and hands free units to the waiters in order.
func (r *room) free() {
	if r.max == 0 {
		return
	}
	r.mu.Lock()
	r.n--
	for len(r.waiters) > 0 && r.n < r.max {
		r.n++
		close(r.waiters[0])
		r.waiters = r.waiters[1:]
	}
	r.mu.Unlock()
}
