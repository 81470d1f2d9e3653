package rescache

import (
	"container/heap"
	"context"
	"math"
	"sync"
	"time"
)

// Recency is recorded without a lock: a hit stores the clock in the entry's
// used stamp (only when the stamp is older than the clock, so a hot entry is
// written at most once per tick). The order is repaired lazily, when an
// eviction looks at it: c.order is a min-heap of found entries by nodeUsed,
// the stamp each had when it was last placed; an entry at the top whose used
// stamp moved on is placed again (heap.Fix) and the next one is looked at.
// An entry at the top that was not used since its placement is the least
// recently used one, since every other entry's stamp is at least its own
// nodeUsed, which is at least the top's. Each use costs at most one re-place,
// at the next eviction that reaches the entry, so an eviction costs
// O(log n) per entry used since it was placed, not O(n).
//
// Uses within the same tick get the same stamp, so among entries last used
// in the same tick the eviction order is unspecified.
//
// golang-lru's list orders by the calls to Get, which need its lock on every
// hit; a stamp and a heap keep the hit path lock-free and still evict exactly
// by last use, to the clock's resolution. (golang-lru's simplelru bounds the
// failed entries kept by ErrorTTL, which are added and removed under c.mu
// only.)
type recency[K comparable, V any] []*entry[K, V]

func (h recency[K, V]) Len() int           { return len(h) }
func (h recency[K, V]) Less(i, j int) bool { return h[i].nodeUsed < h[j].nodeUsed }
func (h recency[K, V]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}
func (h *recency[K, V]) Push(x any) {
	e := x.(*entry[K, V])
	e.heapIdx = int32(len(*h))
	*h = append(*h, e)
}
func (h *recency[K, V]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIdx = -1
	return e
}

// removal is a found entry taken out of the cache under c.mu, whose
// OnEvict and close run after the unlock.
type removal[K comparable, V any] struct {
	e        *entry[K, V]
	reason   EvictReason
	closeNow bool
}

// insertLocked makes e, whose build just succeeded, a found entry.
func (c *Cache[K, V]) insertLocked(e *entry[K, V]) {
	e.nodeUsed = e.used.Load()
	heap.Push(&c.order, e)
	if c.byAge != nil {
		e.ageElem = c.byAge.PushBack(e)
	}
	c.ctr.entries.Add(1)
}

// removeLocked takes the found entry e out of the cache and reports whether
// its value must be closed now (no lease holds it).
func (c *Cache[K, V]) removeLocked(e *entry[K, V], reason EvictReason) (closeNow bool) {
	heap.Remove(&c.order, int(e.heapIdx))
	if e.ageElem != nil {
		c.byAge.Remove(e.ageElem)
		e.ageElem = nil
	}
	c.deleteIfSame(e)
	c.ctr.entries.Add(-1)
	c.ctr.evictions[reason].Add(1)
	return e.markRemoved()
}

// evict removes the found entry e for reason, unless it left already.
func (c *Cache[K, V]) evict(e *entry[K, V], reason EvictReason) bool {
	c.mu.Lock()
	if e.heapIdx < 0 {
		c.mu.Unlock()
		return false
	}
	closeNow := c.removeLocked(e, reason)
	c.mu.Unlock()
	c.afterRemove(e, reason, closeNow)
	return true
}

// makeRoomLocked removes least recently used entries until one more fits
// within MaxEntries. Making room before the insert (not after) keeps Len
// within MaxEntries even for a reader that does not take c.mu.
func (c *Cache[K, V]) makeRoomLocked() []removal[K, V] {
	if c.opts.MaxEntries == 0 {
		return nil
	}
	var out []removal[K, V]
	for len(c.order) >= c.opts.MaxEntries {
		e := c.lruLocked()
		out = append(out, removal[K, V]{e, EvictCapacity, c.removeLocked(e, EvictCapacity)})
	}
	return out
}

// lruLocked returns the least recently used found entry, repairing the
// order on the way. c.order must not be empty.
func (c *Cache[K, V]) lruLocked() *entry[K, V] {
	for {
		e := c.order[0]
		if u := e.used.Load(); u > e.nodeUsed {
			e.nodeUsed = u
			heap.Fix(&c.order, 0)
			continue
		}
		return e
	}
}

// clock returns the coarse clock.
func (c *Cache[K, V]) clock() int64 { return c.now.Load() }

// advance moves the clock to the system clock (it never goes back) and
// returns it. It returns 0 when the cache has no clock.
func (c *Cache[K, V]) advance() int64 {
	if c.tick == 0 {
		return 0
	}
	t := int64(time.Since(c.epoch))
	for {
		cur := c.now.Load()
		if cur >= t {
			return cur
		}
		if c.now.CompareAndSwap(cur, t) {
			return t
		}
	}
}

// use checks that the found entry e (whose word is w) has not expired, and
// records a use of it. It is on the hit path: no lock, and no system clock
// unless e is within a few ticks of its deadline.
func (c *Cache[K, V]) use(e *entry[K, V], w uint64) bool {
	if c.tick == 0 {
		return true
	}
	now := c.now.Load()
	if _, expired := c.expiry(e, w, now); expired {
		return false
	}
	if e.used.Load() < now {
		e.used.Store(now)
	}
	return true
}

// touch records a use of e.
func (c *Cache[K, V]) touch(e *entry[K, V]) {
	if c.tick == 0 {
		return
	}
	if now := c.now.Load(); e.used.Load() < now {
		e.used.Store(now)
	}
}

// fresh reports whether the found entry e has not expired.
func (c *Cache[K, V]) fresh(e *entry[K, V], w uint64) bool {
	if c.tick == 0 {
		return true
	}
	_, expired := c.expiry(e, w, c.now.Load())
	return !expired
}

// expiryWindow is how many ticks before its deadline an entry is checked
// against the system clock instead of the coarse clock. The coarse clock
// lags the system clock by up to a tick while the janitor keeps up; the
// window leaves room for a janitor that runs late.
const expiryWindow = 4

// expiry reports whether the found entry e (whose word is w) has expired,
// and why. now is the coarse clock: far from the deadline it decides alone;
// within expiryWindow ticks of it, the system clock decides, so an entry is
// never served after its deadline. The used stamp may be up to a tick older
// than the use it records, so an idle entry may expire up to a tick early.
// A leased entry is not idle.
func (c *Cache[K, V]) expiry(e *entry[K, V], w uint64, now int64) (EvictReason, bool) {
	life, idle := int64(math.MaxInt64), int64(math.MaxInt64)
	if c.lifetime > 0 {
		life = e.stamp + c.lifetime
	}
	if c.idle > 0 && w&leaseMask == 0 {
		idle = e.used.Load() + c.idle
	}
	if min(life, idle)-now > expiryWindow*c.tick {
		return 0, false
	}
	t := c.advance()
	switch {
	case t >= life:
		return EvictLifetime, true
	case t >= idle:
		return EvictIdle, true
	}
	return 0, false
}

// janitor is the cache's one background goroutine, started by New when an
// option needs it. Every tick it advances the clock, evicts expired entries
// and forgets expired errors; every HealthCheckInterval it starts a round of
// health checks. It exits when Close closes c.janitorOff, and holds one count
// of c.inflight until then.
func (c *Cache[K, V]) janitor() {
	defer c.unhold()
	t := time.NewTicker(time.Duration(c.tick))
	defer t.Stop()
	var nextCheck time.Time
	if c.opts.HealthCheck != nil {
		nextCheck = time.Now().Add(c.opts.HealthCheckInterval)
	}
	checking := false
	checked := make(chan struct{}, 1)
	for {
		select {
		case <-c.janitorOff:
			return
		case <-checked:
			checking = false
		case <-t.C:
			now := c.advance()
			c.sweep(now)
			if !nextCheck.IsZero() && !checking && !time.Now().Before(nextCheck) {
				nextCheck = time.Now().Add(c.opts.HealthCheckInterval)
				checking = true
				c.inflight.Add(1)
				go func() {
					defer c.unhold()
					c.healthRound()
					checked <- struct{}{}
				}()
			}
		}
	}
}

// sweep evicts the entries expired at clock now, and forgets expired errors.
// Its cost is the number of entries that expired or were used since the
// last time they were looked at, not the number of entries; it returns how
// many entries it looked at (besides repairs of the LRU order).
func (c *Cache[K, V]) sweep(now int64) (looked int) {
	var out []removal[K, V]
	c.mu.Lock()
	if c.byAge != nil {
		for c.byAge.Len() > 0 {
			looked++
			e := c.byAge.Front().Value.(*entry[K, V])
			if now-e.stamp < c.lifetime {
				break
			}
			out = append(out, removal[K, V]{e, EvictLifetime, c.removeLocked(e, EvictLifetime)})
		}
	}
	if c.idle > 0 {
		// A leased entry is not idle, but keeps its place in the LRU
		// order (a lease is not a use): set it aside and put it back.
		var held []*entry[K, V]
		for len(c.order) > 0 {
			looked++
			e := c.lruLocked()
			if now-e.nodeUsed < c.idle {
				break
			}
			if e.word.Load()&leaseMask != 0 {
				held = append(held, heap.Pop(&c.order).(*entry[K, V]))
				continue
			}
			out = append(out, removal[K, V]{e, EvictIdle, c.removeLocked(e, EvictIdle)})
		}
		for _, e := range held {
			heap.Push(&c.order, e)
		}
	}
	if c.errs != nil {
		for {
			_, e, ok := c.errs.GetOldest()
			if !ok || now < e.stamp {
				break
			}
			c.errs.RemoveOldest() // calls deleteIfSame
		}
	}
	c.mu.Unlock()
	c.afterRemoveAll(out)
	return looked
}

// healthRound checks the found entries that are neither leased nor used
// within the last HealthCheckInterval, at most MaxConcurrentBuilds at a
// time, and evicts the unhealthy ones. Each check holds an internal lease,
// so the value is not closed under it, and runs outside every lock.
func (c *Cache[K, V]) healthRound() {
	now := c.clock()
	interval := int64(c.opts.HealthCheckInterval)
	c.mu.Lock()
	var due []*entry[K, V]
	for _, e := range c.order {
		if e.word.Load()&leaseMask == 0 && now-e.used.Load() >= interval-c.tick && !e.checking && e.tryLease() {
			e.checking = true
			due = append(due, e)
		}
	}
	c.mu.Unlock()

	limit := len(due)
	if c.opts.MaxConcurrentBuilds > 0 {
		limit = min(limit, c.opts.MaxConcurrentBuilds)
	}
	work := make(chan *entry[K, V])
	var wg sync.WaitGroup
	for range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				c.check(e)
			}
		}()
	}
	for _, e := range due {
		work <- e
	}
	close(work)
	wg.Wait()
}

// check runs one health check of e, which holds an internal lease that
// check releases.
func (c *Cache[K, V]) check(e *entry[K, V]) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.HealthCheckTimeout)
	err := c.callHealthCheck(ctx, e)
	cancel()
	c.ctr.healthChecks.Add(1)
	c.mu.Lock()
	e.checking = false
	c.mu.Unlock()
	if err != nil && !c.closed.Load() {
		c.ctr.healthCheckErrors.Add(1)
		c.warn("health check failed", e.key, err)
		c.evict(e, EvictUnhealthy)
	}
	if e.unlease() {
		c.closeLate(e.key, e.val)
	}
}

func (c *Cache[K, V]) callHealthCheck(ctx context.Context, e *entry[K, V]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Key: e.key, Value: r, keyString: c.opts.KeyString(e.key)}
		}
	}()
	return c.opts.HealthCheck(ctx, e.key, e.val)
}
