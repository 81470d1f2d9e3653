package rescache

import (
	"math/bits"
	"sync/atomic"

	"github.com/rescache/rescache/internal/percpu"
)

// sketch estimates how often each key hash was seen recently: a count-min
// sketch of 4-bit counters, 16 to a word, with aging. It is Caffeine's
// FrequencySketch, as otter v2 ports it (sketch.go): the table has a word
// per entry of capacity (rounded up to a power of two); a key's four
// counters lie in one 64-byte block of eight words, one counter in each of
// four pairs of words, so that an increment touches one cache line; a
// counter saturates at 15; and after 10 x capacity increments every counter
// is halved (the reset), so that old popularity fades. The estimate is the
// least of the key's four counters.
//
// A sketch is guarded by Cache.mu.
type sketch struct {
	table      []uint64
	blockMask  uint64 // blocks - 1
	size       uint64 // increments since the last reset, less the halving
	sampleSize uint64 // size at which the counters are halved
}

const (
	sketchResetMask = 0x7777777777777777 // each counter shifted right by one
	sketchOneMask   = 0x1111111111111111 // the low bit of each counter
)

func newSketch(capacity int) sketch {
	n := uint64(8)
	for n < uint64(capacity) {
		n <<= 1
	}
	return sketch{
		table:      make([]uint64, n),
		blockMask:  n/8 - 1,
		sampleSize: newSketchSample(capacity),
	}
}

// newSketchSample returns the number of increments after which a sketch of
// capacity halves its counters: 10 x capacity, as Caffeine's.
func newSketchSample(capacity int) uint64 { return 10 * uint64(max(capacity, 1)) }

// slots returns the word and the counter within the word of h's i-th
// counter.
func (s *sketch) slot(h uint64, i uint64) (word, shift uint64) {
	block := (h & s.blockMask) << 3
	c := rehash(h) >> (i << 3)
	return block + (c & 1) + i<<1, ((c >> 1) & 15) << 2
}

// frequency returns the estimated count of h, 0 to 15.
func (s *sketch) frequency(h uint32) uint64 {
	sh := spread(uint64(h))
	f := uint64(15)
	for i := range uint64(4) {
		w, shift := s.slot(sh, i)
		f = min(f, (s.table[w]>>shift)&15)
	}
	return f
}

// increment counts one occurrence of h, and halves every counter when the
// sample is full. (Unrolled, as otter's: it runs once per hit drained.)
func (s *sketch) increment(h uint32) {
	sh := spread(uint64(h))
	block := (sh & s.blockMask) << 3
	c := rehash(sh)
	t := s.table
	added := incrementAt(t, block+(c&1), ((c>>1)&15)<<2)
	added = incrementAt(t, block+((c>>8)&1)+2, ((c>>9)&15)<<2) || added
	added = incrementAt(t, block+((c>>16)&1)+4, ((c>>17)&15)<<2) || added
	added = incrementAt(t, block+((c>>24)&1)+6, ((c>>25)&15)<<2) || added
	if added {
		s.size++
		if s.size >= s.sampleSize {
			s.reset()
		}
	}
}

// incrementAt adds one to the counter at shift of word w unless it is at
// 15, and reports whether it did.
func incrementAt(t []uint64, w, shift uint64) bool {
	if (t[w]>>shift)&15 == 15 {
		return false
	}
	t[w] += 1 << shift
	return true
}

// reset halves every counter. The counters that were odd lose half a count
// each in the halving; size is corrected for them as Caffeine does.
func (s *sketch) reset() {
	odd := 0
	for i, w := range s.table {
		odd += bits.OnesCount64(w & sketchOneMask)
		s.table[i] = (w >> 1) & sketchResetMask
	}
	s.size = (s.size - uint64(odd)/4) / 2
}

// spread and rehash are Caffeine's (and otter's) mixers: spread picks the
// block, rehash the four counters within it.
func spread(h uint64) uint64 {
	h ^= h >> 17
	h *= 0xed5ad4bb
	h ^= h >> 11
	h *= 0xac4c1b51
	h ^= h >> 15
	return h
}

func rehash(h uint64) uint64 {
	h *= 0x31848bab
	h ^= h >> 14
	return h
}

// readBuffer records the hits of a TinyLFU cache for the policy without a
// lock: one ring per P (the scheduler's processor), written by the hit path
// while pinned to its P (so each ring has a single writer) and drained
// under Cache.mu, by the next insert, by the janitor's tick and, once the
// cache has evicted, by the hit whose record wraps its ring, if the lock is
// free (Cache.drainReads). A record is the entry that was hit, as in
// Caffeine's read buffer: the drain counts its key in the sketch and moves
// it as its segment asks (a probation entry goes to protected; see
// tinyLFU.accessLocked).
//
// It is lossy, as Caffeine's read buffer is: a ring that fills between two
// drains overwrites its oldest records, and a P beyond the rings
// (GOMAXPROCS raised past the CPUs after New) records nothing. Losing a few
// hits only makes the frequencies a little lower and leaves a probation
// entry where it is until its next hit (or until it reaches the end of
// probation; see tinyLFU.probationTopLocked). A record keeps its entry
// reachable, not open, until the next drain: a removed entry's value may be
// kept from the garbage collector that long (a janitor tick at most while
// the cache is idle), never from its Close.
type readBuffer[K comparable, V any] struct {
	rings []percpu.Ring[entry[K, V]] // one per P; see percpu.Ring
	// evicting is set (under Cache.mu, read without it) at the cache's
	// first eviction for capacity: from then on a caller whose ring has
	// just wrapped drains it (Cache.drainReads). Before, the frequencies
	// decide nothing, and losing records costs nothing.
	evicting atomic.Bool
}

// readSlots is the size of a ring: at least as many hits as a P serves
// between two inserts, in the common case, without a loss.
const readSlots = percpu.RingSize

func newReadBuffer[K comparable, V any](procs int) readBuffer[K, V] {
	return readBuffer[K, V]{rings: make([]percpu.Ring[entry[K, V]], procs)}
}

// record notes a hit of e. It takes no lock and does not allocate.
func (b *readBuffer[K, V]) record(e *entry[K, V]) (wrapped int) {
	p := percpu.Pin()
	wrapped = b.recordPinned(p, e)
	percpu.Unpin()
	return wrapped
}

// recordPinned is record for a caller pinned to P p. It returns p when
// p's ring has just wrapped, so that the caller drains that ring before it
// overwrites records (see Cache.drainReads), and -1 otherwise.
func (b *readBuffer[K, V]) recordPinned(p int, e *entry[K, V]) (wrapped int) {
	if p < len(b.rings) && b.rings[p].PutPinned(e) {
		return p
	}
	return -1
}

// drainRingLocked is drainLocked for ring i only.
func (b *readBuffer[K, V]) drainRingLocked(i int, f func(e *entry[K, V])) { b.rings[i].Drain(f) }

// drainLocked passes every entry recorded since the last drain (at most a
// ring's worth per P) to f, oldest first within each ring, and empties the
// rings.
func (b *readBuffer[K, V]) drainLocked(f func(e *entry[K, V])) {
	for i := range b.rings {
		b.rings[i].Drain(f)
	}
}
