package rescache

import (
	"container/heap"
	"hash/maphash"
	"math/rand/v2"
	"runtime"
	"strconv"
)

// Policy chooses which entry leaves when a cache bounded by
// [Options.MaxEntries] is full. It has no effect on an unbounded cache.
type Policy int

const (
	// LRU evicts the least recently used entry. It is the default.
	LRU Policy = iota
	// TinyLFU is W-TinyLFU: a small LRU window, a frequency sketch, and a
	// segmented main LRU (probation and protected). A new entry always
	// enters the window; when the cache is full, the window's least
	// recently used entry and the main space's are compared by their
	// estimated frequency of use, and the less frequent one is evicted.
	// It keeps the hot keys through scans and one-off keys that LRU lets
	// through.
	TinyLFU
)

// String returns "LRU" or "TinyLFU".
func (p Policy) String() string {
	switch p {
	case LRU:
		return "LRU"
	case TinyLFU:
		return "TinyLFU"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// The TinyLFU policy follows Caffeine's design (its wiki, "Efficiency" and
// "Design"; Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient
// Cache Admission Policy") and otter v2's port of it (policy.go,
// sketch.go):
//
//   - the space is split into a window of 1% of MaxEntries (at least one
//     entry) and a main space, itself split into probation and protected
//     (80% of the main space);
//   - a new entry enters the window, always: a value that was just built is
//     never rejected (admission is about which of two cached entries
//     leaves, not whether a built value is kept);
//   - when the window is full, its least recently used entry moves to
//     probation as the candidate; when the cache is full, the candidate is
//     compared with probation's least recently used entry (the victim) by
//     their estimated frequencies, and the loser is evicted (the candidate
//     wins only with a strictly higher count; a warm candidate, count 6 or
//     more, that loses is still admitted once in 128, at random, against
//     hash flooding, as Caffeine does);
//   - an entry of probation that is requested again moves to protected;
//     when protected is over its share, its least recently used entry goes
//     back to probation;
//   - frequencies come from the sketch (sketch.go): every insert, every hit
//     and every caller that waits for a pending build counts one, through
//     a lossy per-P buffer drained under Cache.mu (Caffeine's read buffer).
//
// Not followed: Caffeine's hill climber, which resizes the window to the
// workload (otter has it too); the window stays at 1%, Caffeine's starting
// point and the size that suits frequency-skewed traffic. Caffeine's
// write buffer and maintenance task are not needed: rescache's inserts
// already take Cache.mu.
//
// Recency within each segment is kept the way LRU keeps it (evict.go): the
// used stamp that the hit path writes, and a heap per segment repaired
// lazily. A move from probation to protected is lazy too: an entry of
// probation whose used stamp moved on since it was placed there has been
// used again, and is promoted when it reaches the top of probation's heap,
// that is when it would otherwise be the next victim; unless the sketch
// counted its key once at most, since then the stamp moved by the release
// of a lease (a use for the idle timeout, not a request). Uses within the
// same clock tick count as one, as they do for LRU.

// Segments of TinyLFU, in entry.seg.
const (
	segWindow uint8 = iota
	segProbation
	segProtected
)

// admitHashDoS is the frequency from which a candidate that loses is still
// admitted once in 128 (Caffeine's ADMIT_HASHDOS_THRESHOLD).
const admitHashDoS = 6

// tinyLFU is the state of the TinyLFU policy. Everything but reads is
// guarded by Cache.mu.
type tinyLFU[K comparable, V any] struct {
	seg          [3]recency[K, V] // window, probation, protected: found entries not parked
	windowMax    int              // entries the window holds before its LRU moves to probation
	protectedMax int              // entries protected holds before its LRU goes back to probation
	sketch       sketch
	rng          *rand.Rand // admission of warm candidates that lose

	reads readBuffer   // hits not yet in the sketch; its own synchronisation
	seed  maphash.Seed // of the key hashes; read-only
}

func newTinyLFU[K comparable, V any](maxEntries int) *tinyLFU[K, V] {
	window := max(1, maxEntries/100)
	return &tinyLFU[K, V]{
		windowMax:    window,
		protectedMax: (maxEntries - window) * 8 / 10,
		sketch:       newSketch(maxEntries),
		rng:          rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		reads:        newReadBuffer(max(runtime.GOMAXPROCS(0), runtime.NumCPU())), // as many rings as c.hot has cells
		seed:         maphash.MakeSeed(),
	}
}

// keyHash returns the hash of key that the sketch counts; never 0 (the read
// buffer's empty slot).
func (p *tinyLFU[K, V]) keyHash(key K) uint32 {
	h := maphash.Comparable(p.seed, key)
	if h32 := uint32(h ^ h>>32); h32 != 0 {
		return h32
	}
	return 1
}

// lenLocked returns the number of entries in the segments (not parked).
func (p *tinyLFU[K, V]) lenLocked() int {
	return len(p.seg[segWindow]) + len(p.seg[segProbation]) + len(p.seg[segProtected])
}

// enterLocked prepares e, whose build just succeeded, to enter the window,
// and counts its insert in the sketch. The caller pushes it. e.hash was
// set by Cache.newEntry.
func (p *tinyLFU[K, V]) enterLocked(e *entry[K, V]) {
	e.seg = segWindow
	p.sketch.increment(e.hash)
}

// drainLocked moves the recorded hits into the sketch.
func (p *tinyLFU[K, V]) drainLocked() {
	p.reads.drainLocked(p.sketch.increment)
}

// admitLocked reports whether the candidate wins against the victim.
func (p *tinyLFU[K, V]) admitLocked(candidate, victim *entry[K, V]) bool {
	cf, vf := p.sketch.frequency(candidate.hash), p.sketch.frequency(victim.hash)
	if cf > vf {
		return true
	}
	return cf >= admitHashDoS && p.rng.IntN(128) == 0
}

// probationTopLocked returns probation's least recently used entry, or nil,
// first promoting to protected every entry at the top that was used since
// it was placed in probation (and demoting protected's least recently used
// entries to probation while protected is over its share).
func (p *tinyLFU[K, V]) probationTopLocked() *entry[K, V] {
	prob, prot := &p.seg[segProbation], &p.seg[segProtected]
	for len(*prob) > 0 {
		e := (*prob)[0]
		u := e.used.Load()
		if u <= e.nodeUsed {
			return e
		}
		e.nodeUsed = u
		if p.sketch.frequency(e.hash) < 2 {
			// Its stamp moved, but no request for the key was counted
			// since its insert: the release of a lease (which counts as a
			// use for the idle timeout), not a hit. Re-placed, not
			// promoted.
			heap.Fix(prob, 0)
			continue
		}
		heap.Pop(prob)
		e.seg = segProtected
		heap.Push(prot, e)
		for len(*prot) > p.protectedMax {
			d := topLocked(prot) // repaired: d.nodeUsed is its used stamp
			heap.Pop(prot)
			d.seg = segProbation
			heap.Push(prob, d)
		}
	}
	return nil
}

// oldestLocked returns the least recently used entry of the segments (nil
// when they are empty) and the heap at whose top it is, for the idle sweep.
func (p *tinyLFU[K, V]) oldestLocked() (*recency[K, V], *entry[K, V]) {
	tops := [3]*entry[K, V]{topLocked(&p.seg[segWindow]), p.probationTopLocked(), topLocked(&p.seg[segProtected])}
	// Promotions may have changed protected's top.
	tops[segProtected] = topLocked(&p.seg[segProtected])
	best := -1
	for i, e := range tops {
		if e != nil && (best < 0 || e.nodeUsed < tops[best].nodeUsed) {
			best = i
		}
	}
	if best < 0 {
		return &p.seg[segWindow], nil
	}
	return &p.seg[best], tops[best]
}

// makeRoomTinyLFULocked is makeRoomLocked for TinyLFU: it makes room in the
// window for one new entry, moving the window's least recently used entry
// to probation as the candidate when the window is full, and while the
// cache would be over MaxEntries it evicts the loser of the candidate and
// the main space's victim. The new entry itself is never a candidate.
func (c *Cache[K, V]) makeRoomTinyLFULocked() []removal[K, V] {
	p := c.lfu
	p.drainLocked()
	win, prob := &p.seg[segWindow], &p.seg[segProbation]
	for len(*win) > p.windowMax {
		// Over its share (a refreshed entry or an unparked one came back
		// to it): the excess moves to probation as Caffeine's window
		// eviction does, without a comparison, since nothing leaves.
		e := topLocked(win)
		heap.Pop(win)
		e.seg = segProbation
		heap.Push(prob, e)
	}
	var candidate *entry[K, V]
	if len(*win) >= p.windowMax {
		candidate = topLocked(win)
		heap.Pop(win)
		candidate.seg = segProbation
	}
	var out []removal[K, V]
	for {
		n := p.lenLocked() + len(c.parked)
		if candidate != nil {
			n++
		}
		if n < c.opts.MaxEntries {
			break
		}
		victim := c.mainVictimLocked()
		switch {
		case victim == nil && candidate == nil:
			victim = topLocked(win)
		case victim == nil || (candidate != nil && !p.admitLocked(candidate, victim)):
			heap.Push(prob, candidate)
			out = append(out, c.removeLocked(candidate, EvictCapacity))
			candidate = nil
			continue
		}
		out = append(out, c.removeLocked(victim, EvictCapacity))
	}
	if candidate != nil {
		heap.Push(prob, candidate)
	}
	return out
}

// mainVictimLocked returns the main space's victim: the least recently used
// of probation and of the parked entries (leased past their idle deadline,
// whatever their segment), or protected's least recently used entry when
// both are empty; nil when the main space is empty.
func (c *Cache[K, V]) mainVictimLocked() *entry[K, V] {
	p := c.lfu
	v, pk := p.probationTopLocked(), topLocked(&c.parked)
	switch {
	case v == nil && pk == nil:
		return topLocked(&p.seg[segProtected])
	case v == nil || (pk != nil && pk.nodeUsed < v.nodeUsed):
		return pk
	}
	return v
}
