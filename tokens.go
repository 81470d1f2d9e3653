package rescache

import "github.com/rescache/rescache/internal/percpu"

// tokenPool keeps released lease tokens for reuse, in a small stack per P
// (percpu.Stack): taking and giving back a token pins the goroutine to its
// P (in the same pin as the lease's counts in Cache.hot: leaseTaken,
// leaseReleased), so each stack has a single user at a time and needs no
// read-modify-write, which makes it cheaper than a sync.Pool (see the
// percpu package doc). A stack that is empty allocates; one that is full
// drops the token for the garbage collector; a P beyond the stacks
// (GOMAXPROCS raised past the CPUs after New) does both.
type tokenPool[K comparable, V any] struct {
	stacks []percpu.Stack[leaseToken[K, V]]
}

func (tp *tokenPool[K, V]) init() {
	tp.stacks = make([]percpu.Stack[leaseToken[K, V]], percpu.Slots())
}

// leaseTaken counts a lease taken on e in c.hot, with a hit when hits is 1
// (recorded in the read buffer, with TinyLFU), and returns a released
// token, or nil, with the ring of the read buffer that has just wrapped, or
// -1 (see Cache.drainReads). The counts, the record and the token take one
// pin of the goroutine to its P, not one each. (On Cache, since it reaches
// c.hot, c.reads and c.tokens, which have a slot for the same Ps.)
func (c *Cache[K, V]) leaseTaken(e *entry[K, V], hits int64) (t *leaseToken[K, V], wrapped int) {
	p := percpu.Pin()
	t, wrapped = c.leasePinned(p, e, hits)
	percpu.Unpin()
	return t, wrapped
}

// leasePinned is leaseTaken for a caller pinned to P p already (leaseHit,
// which also counts the lease there).
func (c *Cache[K, V]) leasePinned(p int, e *entry[K, V], hits int64) (t *leaseToken[K, V], wrapped int) {
	if p < len(c.hot.cells) && p < len(c.tokens.stacks) {
		c.hot.cells[p].addPinned(hits, 1, 0)
		wrapped = -1
		if hits != 0 && c.reads != nil {
			wrapped = c.reads.recordPinned(p, e)
		}
		return c.tokens.stacks[p].PopPinned(), wrapped
	}
	c.hot.overflow.hits.Add(hits)
	c.hot.overflow.taken.Add(1)
	return nil, -1
}

// leaseReleased counts the release of a lease in c.hot and keeps its token
// t for reuse (dropped when its P's stack is full), in one pin.
func (c *Cache[K, V]) leaseReleased(t *leaseToken[K, V]) {
	p := percpu.Pin()
	if p < len(c.hot.cells) && p < len(c.tokens.stacks) {
		c.hot.cells[p].released.AddPinned(1)
		c.tokens.stacks[p].PushPinned(t)
		percpu.Unpin()
		return
	}
	percpu.Unpin()
	c.hot.overflow.released.Add(1)
}
