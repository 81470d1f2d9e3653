// Package percpu holds rescache's per-processor state: the pin to the
// scheduler's processor (P), three structures that the pin gives a single
// writer each: counting cells, the rings of a lossy read buffer, and
// stacks of reusable objects; and per-P reference counts (Counts), whose
// slots any P may decrement, with atomics.
//
// The algorithms are written once, here. Only the four primitives they use
// (Cell, a ring slot, a stack slot, a Counts slot's object pointer) come
// in two builds, selected by one
// build-tag pair: plain.go stores with ordinary loads and stores on 64-bit
// platforms without the race detector (the pin makes each one
// single-writer), and atomic.go uses sync/atomic for the same loads and
// stores in race builds and on 32-bit platforms. Race builds thus run the
// algorithm production runs, and -race checks it: an atomic store and the
// load that reads it order the accesses around them for the race detector,
// as the pin and the scheduler's hand-off of a P order them in production.
//
// Why not sync.Pool, or xsync's Counter: a sync.Pool Get or Put pins too,
// then may go through its shared lock-free chain, empties itself at every
// garbage collection, and in race builds drops a share of Puts at random;
// each costs about as much as the map lookup of a cache hit (measured with
// rescache's BenchmarkGetHit). xsync.Counter picks its stripe through a
// sync.Pool of tokens and adds with a compare-and-swap, a locked
// instruction that, like a shared atomic counter, costs as much as the
// lookup it counts, and a stripe may have two writers. Pinned, a P's cell
// has one writer and needs no read-modify-write at all.
package percpu

import (
	"runtime"
	_ "unsafe" // for go:linkname
)

// Pin disables preemption of the calling goroutine and returns the id of
// its P. Until Unpin, no other goroutine runs on that P, so the P's cells,
// ring and stack have a single writer. Keep pinned sections short and free
// of calls that may block or allocate.
//
// It is runtime.procPin, which the runtime keeps available to linkname
// users (go.dev/issue/67401), as sync.Pool's own pinning uses it.
//
//go:linkname Pin runtime.procPin
func Pin() int

// Unpin undoes Pin.
//
//go:linkname Unpin runtime.procUnpin
func Unpin()

// Slots returns how many per-P slots a structure made now should have: one
// for every P, and one for every CPU, so that raising GOMAXPROCS up to the
// number of CPUs later does not leave Ps without a slot. A P whose id is at
// or beyond the slots (GOMAXPROCS raised further) must take a shared path:
// each structure here says which.
func Slots() int { return max(runtime.GOMAXPROCS(0), runtime.NumCPU()) }

// AddPinned adds d to c, for c's single writer: the goroutine pinned to the
// P that owns c. It is a plain load and store in production (an atomic
// store would be a full fence on amd64, as costly as the lookup it
// counts); see Cell.
func (c *Cell) AddPinned(d int64) {
	if d != 0 {
		c.store(c.Load() + d)
	}
}

// RingSize is the number of slots of a Ring.
const RingSize = 64

// Ring is one P's ring of a lossy buffer of records, pointers to T (nil is
// no record): its P writes it while pinned, and one drainer at a time
// (under a lock of the owner's) empties it. A ring that fills between two
// drains overwrites its oldest records; a record is lost, or drained one
// drain late, never drained twice. A record keeps its object reachable
// until it is drained or overwritten.
//
// This is Caffeine's read buffer, striped by P rather than by thread hash;
// like Caffeine's, it holds the objects read, so that the drainer knows
// which one was read, not only a hash of it.
type Ring[T any] struct {
	n     Cell                  // records written: single writer, the ring's P
	read  uint64                // records drained; guarded by the drainer's lock
	slots [RingSize]ringSlot[T] // the records; nil is an empty slot
	_     [48]byte              // keeps the next ring's counter off this ring's last line
}

// PutPinned records t (never nil), and reports whether the ring has just
// wrapped (every RingSize records): a drain now loses none of them. The
// caller is pinned to the ring's P.
func (r *Ring[T]) PutPinned(t *T) (wrapped bool) {
	n := uint64(r.n.Load())
	r.slots[n&(RingSize-1)].store(t)
	r.n.AddPinned(1)
	return (n+1)&(RingSize-1) == 0
}

// Drain passes every record written since the last drain (at most
// RingSize) to f, oldest first, and empties the ring. Drains of one ring
// must not run at the same time: the caller serialises them.
func (r *Ring[T]) Drain(f func(t *T)) {
	n := uint64(r.n.Load())
	from := r.read
	if n-from > RingSize {
		from = n - RingSize
	}
	for j := from; j < n; j++ {
		// A slot whose store is not visible yet reads nil, or a record an
		// overwrite replaced: either way one record is lost, never
		// passed twice.
		if t := r.slots[j&(RingSize-1)].take(); t != nil {
			f(t)
		}
	}
	r.read = n
}

// StackSize is how many objects a Stack keeps.
const StackSize = 15

// Stack is one P's stack of objects kept for reuse. Its P pushes and pops
// it while pinned, so it has a single user at a time; no other goroutine
// may touch it. With the count, it fills two cache lines on 64-bit
// platforms.
type Stack[T any] struct {
	n     Cell
	items [StackSize]stackSlot[T]
}

// PopPinned returns the object pushed last, or nil when the stack is
// empty. The caller is pinned to the stack's P.
func (s *Stack[T]) PopPinned() *T {
	n := s.n.Load()
	if n == 0 {
		return nil
	}
	s.n.AddPinned(-1)
	slot := &s.items[n-1]
	t := slot.load()
	slot.store(nil)
	return t
}

// PushPinned keeps t and reports true, or reports false when the stack is
// full (t is then the caller's to drop). The caller is pinned to the
// stack's P.
func (s *Stack[T]) PushPinned(t *T) bool {
	n := s.n.Load()
	if n == StackSize {
		return false
	}
	s.items[n].store(t)
	s.n.AddPinned(1)
	return true
}
