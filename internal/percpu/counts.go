package percpu

import "sync/atomic"

// Counts is a per-P table of reference counts on objects whose own count
// is a shared atomic word: a reference taken through Counts is a locked
// add on its P's cache line instead of on the object's, which every P
// takes references on. It is Linux's percpu-refcount (per-CPU counts while
// the object lives, switched to its one atomic count when it dies),
// direct-mapped: each P has CountSlots slots, an object goes to the slot
// its hash picks, and a slot counts one object at a time; a reference that
// finds its slot counting another object takes the object's shared count
// instead. The object's owner calls Freeze when the object's count must be
// exact (it is being removed, or the owner must know whether it is held):
// Freeze moves the counts of every slot that counts the object into the
// shared count, and marks those slots frozen so that they take no new
// reference on it.
//
// A slot's state is one atomic word, n: the frozen bit, the slot's
// binding generation, and its count. Its object pointer p has a single
// writer, the slot's P, which rebinds the slot only while its count is 0;
// Freeze reads p from any P. Every change of n is atomic, so the releases
// of a slot's references, which may run on any P, need no pin.
//
// Why not plain per-P cells as elsewhere in this package: the owner must
// learn, after marking the object dead, of every reference taken before
// the mark, and the taker must learn of a mark made before its reference:
// a Dekker handshake that needs a store-load fence on both sides (Linux
// waits for an RCU grace period instead, which Go does not offer). The
// taker's fence is its locked add on the slot; what it saves is the
// cache-line transfer of a shared count.
type Counts[T any] struct {
	groups []countGroup[T] // one per P; no two on one cache line
}

// CountSlots is how many objects a P's slots count at a time.
const CountSlots = 4

const (
	countFrozen  uint64 = 1 << 63
	countGenUnit uint64 = 1 << 32
	countMask    uint64 = countGenUnit - 1
	countGenMask        = ^countFrozen &^ countMask
	// countLimit keeps a slot's count within its 32 bits: a reference
	// that would reach it takes the shared count instead.
	countLimit uint64 = 1 << 31
)

type countSlot[T any] struct {
	n atomic.Uint64 // countFrozen | generation | count
	p ownedPtr[T]   // the object counted; written by the slot's P only
}

type countGroup[T any] struct {
	slots [CountSlots]countSlot[T] // 64 bytes on 64-bit platforms
	// The allocator aligns the array of groups only to 16 bytes in
	// general, so a group may straddle two lines: the padding keeps the
	// next P's slots off both.
	_ [64]byte
}

// Init makes the slots: one group per P (Slots), no two Ps' slots on one
// cache line.
func (c *Counts[T]) Init() {
	c.groups = make([]countGroup[T], Slots())
}

func (c *Counts[T]) slot(p int, h uint32) *countSlot[T] {
	return &c.groups[p].slots[h%CountSlots]
}

// AcquirePinned takes a reference on t, whose hash is h, in a slot of P p,
// to which the caller is pinned, and returns the slot's index; or returns
// -1 when it took none (the slot counts another object, or is frozen for
// t, or p has no slots), and the caller must take t's shared count
// instead.
//
// The reference is taken before the caller checks that t is still alive:
// if t was marked dead (before its Freeze), the caller gives the reference
// back with Release, and takes none.
func (c *Counts[T]) AcquirePinned(p int, t *T, h uint32) int32 {
	if p >= len(c.groups) {
		return -1
	}
	s := &c.groups[p].slots[h%CountSlots]
	if s.p.load() != t {
		return s.rebindPinned(t, int32(p*CountSlots)+int32(h%CountSlots))
	}
	if s.n.Add(1)&(countFrozen|countLimit) != 0 {
		s.n.Add(^uint64(0)) // frozen (it counted nothing) or full
		return -1
	}
	return int32(p*CountSlots) + int32(h%CountSlots)
}

// rebindPinned is AcquirePinned for a slot that counts another object, or
// none: if no reference of that object is out, the slot now counts t, with
// the reference just taken, and rebindPinned returns i; else -1.
func (s *countSlot[T]) rebindPinned(t *T, i int32) int32 {
	x := s.n.Load()
	if x&countMask != 0 {
		return -1 // counting another object
	}
	// No reference of the old object is out, so no release touches n
	// until this P's next acquire. p first, then n: a Freeze that reads
	// the new n reads the new p after it; one that read the old n fails
	// its compare-and-swap against the new one.
	s.p.store(t)
	if !s.n.CompareAndSwap(x, (x+countGenUnit)&countGenMask|1) {
		return -1 // frozen for the old object meanwhile, at count 0
	}
	return i
}

// Release gives back a reference taken in slot i, from any P, and reports
// whether Freeze had moved it into the object's shared count: the caller
// then drops it from there.
func (c *Counts[T]) Release(i int32) (moved bool) {
	s := &c.groups[i/CountSlots].slots[i%CountSlots]
	return s.n.Add(^uint64(0))&countFrozen != 0
}

// Freeze moves the references on t (hash h) that the slots count into t's
// shared count, through add, and freezes those slots: they take no new
// reference on t, and the releases of the moved references report moved.
// add runs before the slot is frozen, so that a moved reference is in the
// shared count before its release can drop it there: the shared count may
// be too high for a moment (add(-n) undoes a move that lost a race), never
// too low. The caller must be able to bear that: its decisions on a count
// of 0 must wait for the end of Freeze, as the removal's own hold on the
// entry makes them wait in rescache.
//
// Callers must also order Freeze after the mark that makes t's acquirers
// give their references back (a sequentially consistent atomic write,
// which every sync/atomic write is): an acquirer then either sees the mark
// or is seen by Freeze.
func (c *Counts[T]) Freeze(t *T, h uint32, add func(n int64)) {
	for p := range c.groups {
		s := c.slot(p, h)
		for {
			x := s.n.Load()
			if x&countFrozen != 0 || s.p.load() != t {
				break // frozen already (its references moved), or not t's
			}
			n := int64(x & countMask)
			if n != 0 {
				add(n)
			}
			if s.n.CompareAndSwap(x, x|countFrozen) {
				break
			}
			if n != 0 {
				add(-n)
			}
		}
	}
}

// Held reports whether a slot counts a reference on t (hash h), as of
// some moment during the call.
func (c *Counts[T]) Held(t *T, h uint32) bool {
	for p := range c.groups {
		s := c.slot(p, h)
		if s.p.load() == t && s.n.Load()&countMask != 0 {
			return true
		}
	}
	return false
}
