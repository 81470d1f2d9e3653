package rescache

// policy is the eviction policy of a cache: where its found entries that
// are not parked are kept in order, and which one leaves when the cache is
// full. A cache has one, behind Cache.policy: lruPolicy (this file), which
// an unbounded cache uses too (its idle sweep walks the same order), or
// tinyLFU (tinylfu.go). Every method is called under Cache.mu; none runs
// user code. Parked entries (leased past their idle deadline) are the
// cache's (Cache.parked), whatever the policy.
//
// The hit path does not call the policy: TinyLFU's read buffer, the one
// thing a hit touches, is the direct field Cache.reads.
type policy[K comparable, V any] interface {
	// heapOfLocked returns the heap that holds e, found and not parked.
	heapOfLocked(e *entry[K, V]) *recency[K, V]
	// enterLocked prepares e, whose build just succeeded, to be pushed on
	// the heap heapOfLocked then returns for it.
	enterLocked(e *entry[K, V])
	// makeRoomLocked removes entries of c (with c.removeLocked, reason
	// EvictCapacity) until one more fits within MaxEntries, and returns
	// the removals. c is bounded.
	makeRoomLocked(c *Cache[K, V]) []removal[K, V]
	// oldestLocked returns the least recently used entry that is not
	// parked (nil when there is none) and the heap at whose top it is, for
	// the idle sweep.
	oldestLocked() (*recency[K, V], *entry[K, V])
	// unparkedLocked returns the heaps of the found entries that are not
	// parked.
	unparkedLocked() []*recency[K, V]
	// tickLocked is the policy's share of a janitor tick at clock now,
	// with parked entries parked.
	tickLocked(now int64, parked int)
	// drainRingLocked drains one ring of the read buffer (Cache.reads)
	// into the policy, at clock now; see Cache.drainReads.
	drainRingLocked(ring int, now int64)
}

var (
	_ policy[int, int] = (*lruPolicy[int, int])(nil)
	_ policy[int, int] = (*tinyLFU[int, int])(nil)
)

// lruPolicy evicts the least recently used entry. order is a min-heap of
// the found entries that are not parked by nodeUsed, repaired lazily (see
// recency in evict.go).
type lruPolicy[K comparable, V any] struct {
	order recency[K, V]
}

func (p *lruPolicy[K, V]) heapOfLocked(*entry[K, V]) *recency[K, V] { return &p.order }

func (p *lruPolicy[K, V]) enterLocked(*entry[K, V]) {}

// makeRoomLocked evicts the least recently used entries, of order and of
// c.parked, until one more fits.
func (p *lruPolicy[K, V]) makeRoomLocked(c *Cache[K, V]) []removal[K, V] {
	var out []removal[K, V]
	for len(p.order)+len(c.parked) >= c.opts.MaxEntries {
		out = append(out, c.removeLocked(p.victimLocked(&c.parked), EvictCapacity))
	}
	return out
}

// victimLocked returns the least recently used found entry, of order and
// of parked, repairing the order on the way. The cache must hold an entry.
func (p *lruPolicy[K, V]) victimLocked(parked *recency[K, V]) *entry[K, V] {
	a, b := topLocked(&p.order), topLocked(parked)
	switch {
	case a == nil:
		return b
	case b == nil || a.nodeUsed <= b.nodeUsed:
		return a
	default:
		return b
	}
}

func (p *lruPolicy[K, V]) oldestLocked() (*recency[K, V], *entry[K, V]) {
	return &p.order, topLocked(&p.order)
}

func (p *lruPolicy[K, V]) unparkedLocked() []*recency[K, V] {
	return []*recency[K, V]{&p.order}
}

func (p *lruPolicy[K, V]) tickLocked(int64, int) {}

func (p *lruPolicy[K, V]) drainRingLocked(int, int64) {}
