package rescache

import "math/bits"

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
		sampleSize: 10 * uint64(max(capacity, 1)),
	}
}

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
// sample is full.
func (s *sketch) increment(h uint32) {
	sh := spread(uint64(h))
	added := false
	for i := range uint64(4) {
		w, shift := s.slot(sh, i)
		if (s.table[w]>>shift)&15 != 15 {
			s.table[w] += 1 << shift
			added = true
		}
	}
	if added {
		s.size++
		if s.size >= s.sampleSize {
			s.reset()
		}
	}
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

// readBuffer records the hits of a TinyLFU cache for the sketch without a
// lock: one ring per P (the scheduler's processor), written by the hit path
// while pinned to its P (so each ring has a single writer) and drained into
// the sketch under Cache.mu, by the next insert and by the janitor's tick.
// It is lossy, as Caffeine's read buffer is: a ring that fills between two
// drains overwrites its oldest records, and a P beyond the rings (GOMAXPROCS
// raised past the CPUs after New) records nothing. Losing a few hits only makes the
// frequencies a little lower; the sketch is an estimate anyway.
type readBuffer struct {
	rings []readRing
}

// readSlots is the size of a ring: at least as many hits as a P serves
// between two inserts, in the common case, without a loss.
const readSlots = 64

type readRing struct {
	n     cell                // records written: single writer, the ring's P
	read  uint64              // records drained; guarded by Cache.mu
	slots [readSlots]readSlot // key hashes; 0 is an empty slot
	_     [48]byte            // keep the next ring's counter off this ring's last line
}

func newReadBuffer(procs int) readBuffer {
	return readBuffer{rings: make([]readRing, procs)}
}

// record notes a hit of the key whose hash is h (never 0). It takes no
// lock and does not allocate.
func (b *readBuffer) record(h uint32) {
	p := procPin()
	b.recordPinned(p, h)
	procUnpin()
}

// recordPinned is record for a caller pinned to P p.
func (b *readBuffer) recordPinned(p int, h uint32) {
	if p < len(b.rings) {
		r := &b.rings[p]
		r.slots[uint64(r.n.Load())&(readSlots-1)].store(h)
		addSingleWriter(&r.n, 1)
	}
}

// countHit is h.add(1, taken, 0) for a hit of a TinyLFU cache: it counts
// the hit (and the lease taken with it, when taken is 1) and records the
// key's hash in b, within one pin to the P.
func (b *readBuffer) countHit(h *pcounter, hash uint32, taken int64) {
	pid := procPin()
	if pid < len(h.cells) {
		cell := &h.cells[pid]
		addSingleWriter(&cell.hits, 1)
		addSingleWriter(&cell.taken, taken)
		b.recordPinned(pid, hash)
		procUnpin()
		return
	}
	procUnpin()
	h.overflow.hits.Add(1)
	h.overflow.taken.Add(taken)
}

// drainLocked passes every hash recorded since the last drain (at most a
// ring's worth per P) to f, and empties the rings.
func (b *readBuffer) drainLocked(f func(h uint32)) {
	for i := range b.rings {
		r := &b.rings[i]
		n := uint64(r.n.Load())
		from := r.read
		if n-from > readSlots {
			from = n - readSlots
		}
		for j := from; j < n; j++ {
			// A slot whose store is not visible yet reads 0, or a record
			// an overwrite replaced: either way one hit is lost, never
			// counted twice.
			if h := r.slots[j&(readSlots-1)].take(); h != 0 {
				f(h)
			}
		}
		r.read = n
	}
}
