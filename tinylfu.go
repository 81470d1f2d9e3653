package rescache

import (
	"math"
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
// Cache Admission Policy"), its BoundedLocalCache (evictFromWindow,
// evictFromMain, admit, reorderProbation, demoteFromMainProtected, climb,
// determineAdjustment, increaseWindow, decreaseWindow), and otter v2's port
// of it (internal/eviction/tinylfu: policy.go, sketch.go):
//
//   - the space is split into a window, starting at 1% of MaxEntries (at
//     least one entry), and a main space, itself split into probation and
//     protected (starting at 80% of the main space);
//   - a new entry enters the window, always: a value that was just built is
//     never rejected (admission is about which of two cached entries
//     leaves, not whether a built value is kept);
//   - when the window is full, its least recently used entry moves to the
//     most recently used end of probation as the candidate; when the cache
//     is full, the candidate is compared with probation's least recently
//     used entry (the victim) by their estimated frequencies, and the loser
//     is evicted (the candidate wins only with a strictly higher count; a
//     warm candidate, count 6 or more, that loses is still admitted once in
//     128, at random, against hash flooding, as Caffeine does);
//   - an entry of probation that is requested again moves to protected;
//     when protected is over its share, its least recently used entries go
//     back to the most recently used end of probation (Caffeine's
//     demoteFromMainProtected: offerLast), not to its least recently used
//     end, where they would be the next victims;
//   - the hill climber (Caffeine's climb) resizes the window to the
//     workload: at the end of every sample period it computes the
//     period's hit rate and
//     moves the window/main split by a step in the direction that improved
//     it, or back if it got worse; the step starts at 6.25% of MaxEntries
//     (first toward a smaller window), decays by 2% a period, and restarts
//     at 6.25% when the hit rate moves by 5 points or more; entries change
//     segment accordingly (increaseWindow takes probation's least recently
//     used entries, then protected's, into the window's most recently used
//     end; decreaseWindow moves the window's least recently used entries to
//     probation's most recently used end), at most 1,000 per period. The
//     sample period is Caffeine's, the sketch's reset period of
//     10 x MaxEntries requests, except at the start: the first period is
//     MaxEntries requests and each one doubles it up to 10 x MaxEntries
//     (not Caffeine's: with 10 x MaxEntries from the start, Corda's
//     recency-shaped trace spent a tenth to a quarter of its 135,702
//     requests with the window at 1%, and TinyLFU ended 3 to 5 points
//     below LRU; see bench/README.md). Hits
//     are counted from the read buffer when it is drained and misses at
//     inserts, as Caffeine counts them. Two more departures from
//     Caffeine, both for the short periods at the start: sampling starts
//     once the cache is full, not half full (the periods of a cache still
//     filling are not comparable with the ones after it: on Corda at 256
//     entries, the climber then turned the window back toward 1% and
//     TinyLFU reached .30 against LRU's .333); and a period whose hit rate
//     moved by less than one standard error of its own sampling noise,
//     sqrt(h(1-h)/n) for a hit rate h over n requests, moves nothing
//     (the step still decays), where Caffeine takes any change, even 0,
//     as a direction: on a flat response its window walks at random, and
//     on Corda at 1,024 entries it walked from 255 entries to 32 and lost
//     a point. A real change of the workload moves the hit rate by more
//     than the noise, and the climber then resumes;
//   - frequencies come from the sketch (sketch.go): every insert, every hit
//     and every caller that waits for a pending build counts one, through
//     a lossy per-P buffer drained under Cache.mu (Caffeine's read buffer):
//     at every insert, at every janitor tick and, once the cache has
//     evicted, whenever a P's ring wraps (see drainReads), as Caffeine
//     drains when a stripe fills. The sketch counts nothing until the
//     cache is half full, as Caffeine allocates it only then (counting):
//     the keys that filled the cache would otherwise keep a count that
//     later candidates of the same frequency cannot beat (on the LIRS
//     backf trace at 600 entries, .566-.612 against LRU's .733).
//
// So recency-shaped traffic grows the window toward plain LRU, and
// frequency-shaped traffic shrinks it. Adapting takes sample periods: a
// full step moves 6.25% of MaxEntries, so from 1% to half of MaxEntries
// takes eight periods in one direction, about 45 x MaxEntries requests
// from the moment the cache is full (periods of 1, 2, 4, 8 and then
// 10 x MaxEntries), or 80 x MaxEntries later on; a step shrinks by 2% a
// period while the hit rate moves less than 5 points, and a period whose
// change is within its noise moves nothing, so a flat response holds the
// split where it is. The climber runs where the read buffer is
// drained, under Cache.mu (each insert, each janitor tick), never on the
// hit path; outside the end of a period it costs a comparison, and at the
// end of one it moves at most the step's worth of entries, O(log n) each.
//
// Not followed: Caffeine's write buffer and maintenance task are not
// needed, since rescache's inserts already take Cache.mu; and recency
// within a segment is kept with a heap, not a linked list (below).
//
// Recency within each segment is kept the way LRU keeps it (evict.go): the
// used stamp that the hit path writes, and a heap per segment repaired
// lazily (segTopLocked). An entry that changes segment without being used
// (a candidate, a demoted entry, an entry the climber moves) is placed at
// the most recently used end of its new segment: its heap key, nodeUsed, is
// set to the clock of the move, not to its used stamp (see placeLocked).
// Without an IdleTimeout, every key the policy gives (an insert, a move, a
// promotion, the drain of a request) is also one more than the last one it
// gave when that is higher (nextKey), so that the entries placed or used
// within one tick of the clock keep the order in which that happened
// rather than tie (with ties, on the LIRS loop trace at 512 entries, the
// victim was any entry of its tick: .447 against .492; see
// bench/README.md); a drained request writes its key into the entry's used
// stamp, which the heap's repair then reads (segTopLocked). The keys run
// ahead of the clock by one nanosecond per placement within a tick, never
// by a tick. With an IdleTimeout the idle sweep walks the same heaps and
// must close an idle entry on time, so every key is the entry's used
// stamp; entries of one tick tie, and a probation entry moves to protected
// lazily (below). A use within the tick of the move is not seen as a use.
//
// Without an IdleTimeout, a drained request moves an entry of the window
// or of protected to the most recently used end of its segment, in the
// order of the requests, as Caffeine's reorder does (accessLocked): left
// to its used stamp and repaired at the top of the heap, the entries used
// within one clock tick took the order of the repair, not of their uses
// (mean gap to the optimum over 50 trace rows, 5.27 points lazily against
// 4.94 with the reorder alone; see bench/README.md, section 10). And a
// move from probation to protected happens when the request is drained
// from the read buffer, as Caffeine's
// reorderProbation does it (accessLocked): a lazy move, when the entry
// reached the top of probation's heap, left the victim to be any entry
// that had not been requested again yet, and the comparisons then
// favoured the candidates, whose count already held their latest request
// (loop trace at 512 entries: .471 with the lazy move, .492 with this
// one). With an IdleTimeout the move stays lazy: with keys that tie
// within a tick, as they do then, the move at the drain did worse (.447,
// measured with the ties and no IdleTimeout); and with keys ordered within
// a reading but moved entries keyed by their used stamps, as the idle
// sweep needs, the move at the drain gained nothing on the loop (.39-.41
// against .41). A request the
// lossy buffer dropped, and the release of a lease (which moves the used
// stamp but is not a request), are seen at the top of probation: an entry
// whose stamp moved since it was placed there is promoted then, unless
// the sketch counted its key once at most (the release of a lease, not a
// hit), when it is placed again instead.

// Segments of TinyLFU, in an entry's place (entry.segment).
const (
	segWindow uint8 = iota
	segProbation
	segProtected
)

// admitHashDoS is the frequency from which a candidate that loses is still
// admitted once in 128 (Caffeine's ADMIT_HASHDOS_THRESHOLD).
const admitHashDoS = 6

// The hill climber's constants, Caffeine's.
const (
	climbRestart   = 0.05   // a change of hit rate that restarts the step (HILL_CLIMBER_RESTART_THRESHOLD)
	climbStep      = 0.0625 // the first step, of MaxEntries (HILL_CLIMBER_STEP_PERCENT)
	climbDecay     = 0.98   // the step's decay per period (HILL_CLIMBER_STEP_DECAY_RATE)
	climbTransfers = 1000   // most entries moved between segments at once (QUEUE_TRANSFER_THRESHOLD)
)

// tinyLFU is the state of the TinyLFU policy. Everything but reads is
// guarded by Cache.mu.
type tinyLFU[K comparable, V any] struct {
	seg          [3]recency[K, V] // window, probation, protected: found entries not parked
	maximum      int              // MaxEntries
	windowMax    int              // entries the window holds before its LRU moves to probation; at least 1
	protectedMax int              // entries protected holds before its LRU goes back to probation
	sketch       sketch
	rng          *rand.Rand // admission of warm candidates that lose

	// now is the clock of the pass under way (set by drainLocked): the
	// heap key of the entries that the pass moves without a use.
	now int64
	// key is the last heap key given to an entry inserted, moved or
	// promoted (nextKey), without an IdleTimeout.
	key int64
	// slack is how far above its used stamp the heap key of a moved entry
	// may go (0 with an IdleTimeout; math.MaxInt64 without one).
	slack int64

	// counting is set once the cache was half full: from then on the
	// sketch counts requests (see above).
	//
	// The hill climber (see above). hits and misses count the requests of
	// the current sample period; sampling is set once the cache was full;
	// step is signed (negative: toward a smaller window), in
	// entries; adjustment is the move decided at the end of the last
	// period, in entries (negative: shrink the window).
	hits, misses int
	sampling     bool
	counting     bool
	prevHitRate  float64
	step         float64
	adjustment   int
	period       int // requests in the current sample period
	periodMax    int // the longest period: the sketch's reset period

	reads readBuffer[K, V] // hits not yet in the sketch; its own synchronisation (Cache.reads points here)
}

// newTinyLFU returns the policy state of a cache of maxEntries, idle its
// IdleTimeout in nanoseconds (0: none).
func newTinyLFU[K comparable, V any](maxEntries int, idle int64) *tinyLFU[K, V] {
	window := max(1, maxEntries-int(0.99*float64(maxEntries)))
	slack := int64(math.MaxInt64)
	if idle > 0 {
		slack = 0
	}
	return &tinyLFU[K, V]{
		maximum:      maxEntries,
		windowMax:    window,
		protectedMax: int(0.8 * float64(maxEntries-window)),
		sketch:       newSketch(maxEntries),
		rng:          rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		slack:        slack,
		step:         -climbStep * float64(maxEntries),
		period:       max(maxEntries, 1),
		periodMax:    int(newSketchSample(maxEntries)),
		reads:        newReadBuffer[K, V](max(runtime.GOMAXPROCS(0), runtime.NumCPU())), // as many rings as c.hot has cells
	}
}

// lenLocked returns the number of entries in the segments (not parked).
func (p *tinyLFU[K, V]) lenLocked() int {
	return len(p.seg[segWindow]) + len(p.seg[segProbation]) + len(p.seg[segProtected])
}

// enterLocked prepares e, whose build just succeeded, to enter the window,
// and counts its insert in the sketch (once the cache, this entry
// included, is half full: counting) and as a miss of the sample. The
// caller pushes it. e.hash was set by Cache.newEntry.
func (p *tinyLFU[K, V]) enterLocked(e *entry[K, V]) {
	e.setSegment(segWindow)
	e.nodeUsed = p.nextKey(e.nodeUsed)
	if !p.counting && 2*(p.lenLocked()+1) >= p.maximum {
		p.counting = true
	}
	if p.counting {
		p.sketch.increment(e.hash)
	}
	p.misses++
}

// drainRingLocked is drainLocked for one ring of the read buffer.
func (p *tinyLFU[K, V]) drainRingLocked(ring int, now int64) {
	p.now = max(p.now, now)
	p.reads.drainRingLocked(ring, p.accessLocked)
}

// drainLocked passes the recorded hits to accessLocked, and notes now, the
// clock, for the moves of the pass that follows.
func (p *tinyLFU[K, V]) drainLocked(now int64) {
	p.now = max(p.now, now)
	p.reads.drainLocked(p.accessLocked)
}

// accessLocked is a recorded request for e, drained (Caffeine's onAccess):
// its key is counted in the sketch (once the cache was half full) and as a
// hit of the climber's sample, and, without an IdleTimeout, an entry of
// probation moves to protected at once (Caffeine's reorderProbation),
// keyed by its use; protected's least recently used entries then go back
// to probation while protected is over its share. An entry of the window
// or of protected moves to the most recently used end of its segment
// (Caffeine's reorder): its used stamp moves on to the policy's next key,
// O(1), and its heap repairs itself when the entry reaches the top. With
// an IdleTimeout, entries stay where they are: their used stamps, which
// the hit wrote, repair their heaps lazily. e may have left the cache, been parked or still be
// pending since it was recorded (a waiter's record): then it is only
// counted.
func (p *tinyLFU[K, V]) accessLocked(e *entry[K, V]) {
	if p.counting {
		p.sketch.increment(e.hash)
	}
	p.hits++
	if p.slack == 0 {
		return
	}
	seg := e.segment()
	h := &p.seg[seg]
	i := e.idx()
	if i < 0 || i >= len(*h) || (*h)[i] != e {
		return // pending, parked (its index is in Cache.parked) or removed
	}
	if seg != segProbation {
		// The most recently used end of its segment, in the order of the
		// requests (Caffeine's reorder of the window and of protected):
		// its used stamp moves to the next key, and the heap repairs
		// itself when the entry reaches its top (segTopLocked), which
		// keeps the drain O(1) per request.
		stampUse(e, p.nextKey(e.used.Load()))
		return
	}
	h.remove(i)
	e.nodeUsed = p.nextKey(e.used.Load())
	e.setSegment(segProtected)
	p.seg[segProtected].push(e)
	p.demoteLocked()
}

// segTopLocked is topLocked for a segment's heap h: it returns h's least
// recently used entry, or nil, repairing the heap on the way with the
// entries' used stamps, which, without an IdleTimeout, the drain of their
// requests set to keys of nextKey (accessLocked), in the order of the
// requests.
func (p *tinyLFU[K, V]) segTopLocked(h *recency[K, V]) *entry[K, V] {
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

// nextKey returns the heap key of an entry that the policy places now, at
// least at (its used stamp, or the clock of a move): without an
// IdleTimeout, one more than the last key given when that is higher, so
// that the entries placed within one tick of the clock keep the order in
// which they were placed; with one, at itself, since the idle sweep reads
// the key as the last use.
func (p *tinyLFU[K, V]) nextKey(at int64) int64 {
	if p.slack == 0 {
		return at
	}
	p.key = max(p.key+1, at)
	return p.key
}

// placeLocked pushes e, which is in no heap, at the most recently used end
// of segment seg (see the comment above on the heap key).
func (p *tinyLFU[K, V]) placeLocked(e *entry[K, V], seg uint8) {
	u := e.used.Load()
	e.nodeUsed = p.nextKey(max(u, min(p.now, satAdd(u, p.slack))))
	e.setSegment(seg)
	p.seg[seg].push(e)
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
// entries to probation's most recently used end while protected is over
// its share).
func (p *tinyLFU[K, V]) probationTopLocked() *entry[K, V] {
	prob, prot := &p.seg[segProbation], &p.seg[segProtected]
	for len(*prob) > 0 {
		e := (*prob)[0]
		u := e.used.Load()
		if u <= e.nodeUsed {
			return e
		}
		e.nodeUsed = p.nextKey(u)
		if p.sketch.frequency(e.hash) < 2 {
			// Its stamp moved, but no request for the key was counted
			// since its insert: the release of a lease (which counts as a
			// use for the idle timeout), not a hit. Re-placed, not
			// promoted.
			prob.fix(0)
			continue
		}
		prob.pop()
		e.setSegment(segProtected)
		prot.push(e) // by its use: it was just used
		p.demoteLocked()
	}
	return nil
}

// demoteLocked moves protected's least recently used entries to the most
// recently used end of probation while protected is over its share
// (Caffeine's demoteFromMainProtected).
func (p *tinyLFU[K, V]) demoteLocked() {
	prot := &p.seg[segProtected]
	for len(*prot) > p.protectedMax {
		d := p.segTopLocked(prot)
		prot.pop()
		p.placeLocked(d, segProbation)
	}
}

// climbLocked is Caffeine's climb: at the end of a sample period it
// decides the window's adjustment (determineAdjustment) and moves entries
// between the segments to apply it.
func (p *tinyLFU[K, V]) climbLocked(size int) {
	p.determineAdjustmentLocked(size)
	p.demoteLocked()
	switch {
	case p.adjustment > 0:
		p.increaseWindowLocked()
	case p.adjustment < 0:
		p.decreaseWindowLocked()
	}
}

// determineAdjustmentLocked sets p.adjustment at the end of a sample
// period, given size, the entries cached, and starts the next period.
func (p *tinyLFU[K, V]) determineAdjustmentLocked(size int) {
	p.adjustment = 0
	if !p.sampling {
		if size < p.maximum {
			p.hits, p.misses, p.prevHitRate = 0, 0, 0
			return
		}
		p.sampling = true
	}
	requests := p.hits + p.misses
	if requests < p.period {
		return
	}
	hitRate := float64(p.hits) / float64(requests)
	change := hitRate - p.prevHitRate
	amount := p.step
	if change < 0 {
		amount = -p.step
	}
	switch {
	case math.Abs(change) < math.Sqrt(hitRate*(1-hitRate)/float64(requests)):
		// Within the period's own sampling noise (one standard error of
		// a hit rate over requests): no evidence either way, so the split
		// stays and the step decays (not Caffeine's; see above).
		p.step = climbDecay * p.step
	case math.Abs(change) >= climbRestart:
		p.step = math.Copysign(climbStep*float64(p.maximum), amount)
		p.adjustment = int(amount)
	default:
		p.step = climbDecay * amount
		p.adjustment = int(amount)
	}
	p.period = min(2*p.period, p.periodMax)
	p.prevHitRate = hitRate
	p.hits, p.misses = 0, 0
}

// increaseWindowLocked grows the window by p.adjustment entries taken from
// protected's share: probation's least recently used entries (then
// protected's, when probation is empty) move to the window's most recently
// used end. The share that found no entry to move is given back.
func (p *tinyLFU[K, V]) increaseWindowLocked() {
	if p.protectedMax == 0 {
		return
	}
	quota := min(p.adjustment, p.protectedMax)
	p.protectedMax -= quota
	p.windowMax += quota
	p.demoteLocked()
	for range climbTransfers {
		if quota == 0 {
			break
		}
		e := p.probationTopLocked()
		from := &p.seg[segProbation]
		if e == nil {
			e, from = p.segTopLocked(&p.seg[segProtected]), &p.seg[segProtected]
		}
		if e == nil {
			break
		}
		from.pop()
		p.placeLocked(e, segWindow)
		quota--
	}
	p.protectedMax += quota
	p.windowMax -= quota
	p.adjustment = quota
}

// decreaseWindowLocked shrinks the window by -p.adjustment entries (it
// keeps one at least), given to protected's share: the window's least
// recently used entries move to probation's most recently used end.
func (p *tinyLFU[K, V]) decreaseWindowLocked() {
	if p.windowMax <= 1 {
		return
	}
	quota := min(-p.adjustment, p.windowMax-1)
	p.protectedMax += quota
	p.windowMax -= quota
	win := &p.seg[segWindow]
	for range climbTransfers {
		if quota == 0 {
			break
		}
		e := p.segTopLocked(win)
		if e == nil {
			break
		}
		win.pop()
		p.placeLocked(e, segProbation)
		quota--
	}
	p.protectedMax -= quota
	p.windowMax += quota
	p.adjustment = -quota
}

// oldestLocked returns the least recently used entry of the segments (nil
// when they are empty) and the heap at whose top it is, for the idle sweep.
func (p *tinyLFU[K, V]) oldestLocked() (*recency[K, V], *entry[K, V]) {
	tops := [3]*entry[K, V]{p.segTopLocked(&p.seg[segWindow]), p.probationTopLocked(), p.segTopLocked(&p.seg[segProtected])}
	// Promotions may have changed protected's top.
	tops[segProtected] = p.segTopLocked(&p.seg[segProtected])
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

// makeRoomLocked is Cache.makeRoomLocked for TinyLFU: it makes room in the
// window for one new entry, moving the window's least recently used entry
// to probation as the candidate when the window is full, and while the
// cache would be over MaxEntries it evicts the loser of the candidate and
// the main space's victim; then it runs the hill climber. The new entry
// itself is never a candidate.
func (p *tinyLFU[K, V]) makeRoomLocked(c *Cache[K, V]) []removal[K, V] {
	p.drainLocked(c.clock())
	win, prob := &p.seg[segWindow], &p.seg[segProbation]
	for len(*win) > p.windowMax {
		// Over its share (a refreshed entry or an unparked one came back
		// to it): the excess moves to probation as Caffeine's window
		// eviction does, without a comparison, since nothing leaves.
		e := p.segTopLocked(win)
		win.pop()
		p.placeLocked(e, segProbation)
	}
	var candidate *entry[K, V]
	if len(*win) >= p.windowMax {
		candidate = p.segTopLocked(win)
		win.pop()
		candidate.setSegment(segProbation)
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
		victim := p.mainVictimLocked(&c.parked)
		switch {
		case victim == nil && candidate == nil:
			victim = p.segTopLocked(win)
		case victim == nil || (candidate != nil && !p.admitLocked(candidate, victim)):
			prob.push(candidate)
			out = append(out, c.removeLocked(candidate, EvictCapacity))
			candidate = nil
			continue
		}
		out = append(out, c.removeLocked(victim, EvictCapacity))
	}
	if candidate != nil {
		p.placeLocked(candidate, segProbation)
	}
	if len(out) > 0 && !p.reads.evicting.Load() {
		p.reads.evicting.Store(true)
	}
	p.climbLocked(p.lenLocked() + len(c.parked) + 1) // the new entry included
	return out
}

// mainVictimLocked returns the main space's victim: the least recently used
// of probation and of the parked entries (leased past their idle deadline,
// whatever their segment), or protected's least recently used entry when
// both are empty; nil when the main space is empty.
func (p *tinyLFU[K, V]) mainVictimLocked(parked *recency[K, V]) *entry[K, V] {
	v, pk := p.probationTopLocked(), topLocked(parked)
	switch {
	case v == nil && pk == nil:
		return p.segTopLocked(&p.seg[segProtected])
	case v == nil || (pk != nil && pk.nodeUsed < v.nodeUsed):
		return pk
	}
	return v
}

// drainReads drains ring, the ring of TinyLFU's read buffer that the caller
// has just wrapped, into the sketch if c.mu is free, once the cache has
// evicted for capacity (readBuffer.evicting): only the caller's own ring, whose
// lines its P writes, not the others' (which their own Ps drain). So a ring is drained at least every
// RingSize records while the lock is free, and long runs of hits between
// two inserts are counted, not overwritten. Without it the sketch counted
// every insert but only the last RingSize hits of a run, so cached keys
// looked rarer than the candidates that would evict them (on the LIRS loop
// trace at 512 entries, .44 against .47 with it; gli at 750, .35 against
// .44). Caffeine schedules a drain when a stripe of its read buffer fills,
// as otter does. It never waits for the lock: a caller that finds it taken
// goes on, and the records wait for the next drain (lossy, as before); it
// does not move the clock (a moved clock would have every hit rewrite its
// entry's used stamp; it reads it, for the keys of the entries it moves).
// It runs no user code. Its cost, about 64 sketch increments every 64 hits
// of a P, and without an IdleTimeout a move to protected (O(log n)) for
// each probation entry among them and a compare-and-swap of the used stamp
// for each other one, is measured in bench/README.md.
func (c *Cache[K, V]) drainReads(ring int) {
	if c.mu.TryLock() {
		c.policy.drainRingLocked(ring, c.clock())
		c.mu.Unlock()
	}
}

// heapOfLocked returns the heap of e's segment.
func (p *tinyLFU[K, V]) heapOfLocked(e *entry[K, V]) *recency[K, V] { return &p.seg[e.segment()] }

// unparkedLocked returns the three segments.
func (p *tinyLFU[K, V]) unparkedLocked() []*recency[K, V] {
	return []*recency[K, V]{&p.seg[segWindow], &p.seg[segProbation], &p.seg[segProtected]}
}

// tickLocked drains the read buffer and runs the climber at a janitor tick.
func (p *tinyLFU[K, V]) tickLocked(now int64, parked int) {
	p.drainLocked(now)
	p.climbLocked(p.lenLocked() + parked)
}
