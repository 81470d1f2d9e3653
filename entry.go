package rescache

import (
	"sync/atomic"
)

// The state of an entry lives in one atomic word, so that the hit path reads
// it with a single load and so that the decision to close a value is taken by
// exactly one atomic transition:
//
//	bits 0-39  leases: callers' leases, plus the reservations of Acquire
//	           callers waiting on a pending build; a lease that Lease's hit
//	           path took in a per-P slot (Cache.leases) is counted there
//	           instead, until Freeze moves it here (below)
//	bits 40-59 holds: the cache's own holds on the value (a health check
//	           running, an OnEvict not yet returned); a hold keeps the value
//	           open but, unlike a lease, never changes what callers see (a
//	           held entry still idles out)
//	parkedBit  the found entry sits in Cache.parked (leased past its idle
//	           deadline) rather than its policy's heap; set and cleared under
//	           Cache.mu, read with the lease count in one load by the
//	           release of a lease (see Cache.unpark)
//	valuedBit  the build returned a value (found, or detached with a value)
//	failedBit  the build failed; the call's err is set
//	removedBit the entry left the cache (evicted, invalidated, closed, or
//	           detached while pending); it never comes back
//
// The per-P slots of Cache.leases (percpu.Counts) count most leases of
// found entries without writing the word, which every P reads; only the
// word decides when to close or unpark, so before a decision that needs
// every lease, the slots' counts of the entry move into the word (Freeze,
// through addLeases), and the slots then take no new lease of it: at the
// removal (removeLocked, after removeHeld; the removal's hold keeps the
// value open while Freeze runs, since its moves may count a lease twice
// for a moment), and when the idle sweep finds the entry past its
// deadline (before it decides to park it; not yet parked, not removed, the
// entry takes no decision from a count that is too high). A slot lease is
// taken before its taker checks removedBit, and the removal sets
// removedBit before Freeze reads the slots (both atomic, sequentially
// consistent): either the taker sees the bit and gives the lease back, or
// Freeze sees the lease and moves it. The lease's release then drops it
// from the word (dropLease). The hit path's idle check and the health
// round, which need no exact count, also ask the slots (Counts.Held).
//
// An entry is pending while neither valuedBit nor failedBit is set, and found
// while valuedBit is set and removedBit is not. Once removedBit is set the
// lease and hold counts only go down (tryLease and tryHold refuse a removed
// entry), so the word reaches removedBit|valuedBit with no lease and no hold
// exactly once, and the operation that makes it so closes the value: the
// last release, the end of the last hold (the OnEvict of the removal, or a
// health check), or the finish of a build that was detached.
//
// Only the methods below write the word; every transition, its caller and
// what guards it:
//
//	transition         from -> to                          caller (guard)
//	reserveNew         new -> pending, 1 lease             slow, for Lease/Acquire, before the entry is published
//	tryLease           found or pending -> +1 lease        Lease's hit path when its slot is taken, slow (none: CAS)
//	addLeases          + the leases that slots counted     Counts.Freeze, from removeLocked and the idle sweep (Cache.mu)
//	release / unlease  -1 lease; closeNow at the last      dropLease, wait (none: Add)
//	                   lease of a removed value
//	tryHold            found -> +1 hold                    health checks (none: CAS)
//	unhold             -1 hold; closeNow as release        afterRemove, health checks, Close (none: Add)
//	removeHeld         found -> removed, +1 hold           removeLocked (Cache.mu)
//	markRemoved        pending or failed -> removed;       Invalidate, forget (Cache.mu); finish, for a
//	                   found refresh value -> removed      refresh whose old entry left (Cache.mu)
//	markFailed         pending -> failed                   finish (Cache.mu, once: call.finished)
//	markFound          pending -> found                    finish (Cache.mu, once)
//	markDetachedValue  pending+removed -> valued+removed;  finish (Cache.mu, once)
//	                   closeNow when no lease is left
//	park / unparkBit   found, leased <-> parked            the idle sweep, unpark, removeLocked (Cache.mu)
const (
	parkedBit  uint64 = 1 << 63
	valuedBit  uint64 = 1 << 62
	failedBit  uint64 = 1 << 61
	removedBit uint64 = 1 << 60
	holdUnit   uint64 = 1 << 40
	leaseMask  uint64 = holdUnit - 1
	countMask  uint64 = removedBit - 1 // leases and holds
)

// entry is one key's slot in the cache. A pending entry becomes found or
// failed once; a found entry is removed once.
type entry[K comparable, V any] struct {
	key K

	// Guarded by Cache.mu: its heap position and TinyLFU segment (see idx
	// and segment).
	place uint32

	// hash is the key's hash in Cache.m, which TinyLFU's sketch counts
	// too: written before the entry is published and read-only after; a
	// walk of the table and the hit path read it.
	hash uint32

	// next is the entry after this one in its chain of Cache.m (see
	// table); written under the table's lock, read by walks without one.
	next atomic.Pointer[entry[K, V]]

	// val is written once, before valuedBit is set (and before the
	// pending call's done is closed), and read only after.
	val V

	word atomic.Uint64 // see the constants above

	// used is the clock stamp of the last Get, Acquire or release, written
	// without a lock on the hit path; it never goes back (see touch).
	// Without an IdleTimeout, TinyLFU's drain of a request moves it on to
	// the policy's next key (tinyLFU.accessLocked, under Cache.mu, with
	// the same compare-and-swap), which runs ahead of the clock by at most
	// a nanosecond per key the policy gave within the tick (nextKey), so
	// that the policy's heaps keep the order of the requests of one tick.
	used atomic.Int64

	// pending holds what only a pending or failed entry needs; it is
	// cleared when the build succeeds, so a found entry does not keep the
	// done channel.
	pending atomic.Pointer[call]

	// born is the entry's ticket in the order of builds and Refresh calls
	// (Cache.refreshSeq), taken when the entry was made, before its build
	// started: a Refresh whose own ticket is lower is answered by it.
	// Read-only after newEntry.
	born uint64

	// refresh is the found entry's refresh state (refresh.go): set when
	// its build finishes with RefreshAfter, or by its first Refresh (a
	// CAS from nil), so that an entry never refreshed carries one pointer,
	// not the state.
	refresh atomic.Pointer[refreshState]

	// life is, with MaxLifetime, the found entry's end of life and its
	// place in Cache.byAge: set before the entry is found (stampBuilt),
	// its deadline read-only afterwards; nil without MaxLifetime, so that
	// entries without a lifetime do not carry it.
	life *lifetime

	// nodeUsed is the used stamp by which the entry sits in its heap (see
	// recency, evict.go); guarded by Cache.mu.
	nodeUsed int64
}

// call is the state of a build in flight, shared by its waiters: they wait
// for done, then read err, or the entry's val when err is nil. Like
// singleflight's call, err and detached are written once before done is
// closed and read only after. A failed entry keeps its call, for err.
type call struct {
	done chan struct{}
	err  error
	// detached says that the build's value was never cached (Invalidate
	// or Close detached the entry while it was pending): nothing keeps the
	// value open for a caller that holds no lease.
	detached bool
	// finished is set by whoever finishes the build first: the build
	// itself, or its context ending (BuildTimeout, Close).
	finished atomic.Bool

	// For a refresh build: replaces is the found entry the new value is
	// to replace, and seq the refresh's ticket (see Cache.Refresh); both
	// are set before the build starts and read-only afterwards.
	replaces any // *entry[K, V]
	seq      uint64

	// until is, for a failed build kept by ErrorTTL, the clock stamp until
	// which its error is remembered; written before done is closed.
	until int64
}

// lifetime is a found entry's end of life under MaxLifetime: the end of
// its build plus MaxLifetime less its jitter, and its index in Cache.byAge
// (-1 when not there; guarded by Cache.mu).
type lifetime struct {
	deadline int64
	idx      int32
}

// The place word of an entry (guarded by Cache.mu) keeps, in its low 30
// bits, one more than the entry's index in its heap (its policy's heap, or
// Cache.parked; 0 when in neither), and in its top two bits TinyLFU's
// segment, which an entry keeps while it is parked so that its unpark puts
// it back where it was. Packing them keeps the entry within its size class.
const (
	placeIdxMask = 1<<30 - 1
	placeSegShft = 30
)

// idx returns e's index in its heap, or -1 when it is in none.
func (e *entry[K, V]) idx() int { return int(e.place&placeIdxMask) - 1 }

// setIdx sets e's index in its heap (-1: none). Heaps hold fewer than
// 2^30-1 entries (an int32 index held at most 2^31-1).
func (e *entry[K, V]) setIdx(i int) { e.place = e.place&^placeIdxMask | uint32(i+1) }

// segment returns e's TinyLFU segment.
func (e *entry[K, V]) segment() uint8 { return uint8(e.place >> placeSegShft) }

// setSegment sets e's TinyLFU segment.
func (e *entry[K, V]) setSegment(s uint8) {
	e.place = e.place&placeIdxMask | uint32(s)<<placeSegShft
}

// newEntry returns a new pending entry for key, stamped with its ticket in
// the order of builds and Refresh calls (born); with TinyLFU it carries the
// key's hash, computed before the entry is published, since callers read
// it without a lock (the hit path, and callers waiting for the build).
func (c *Cache[K, V]) newEntry(key K) *entry[K, V] {
	e := newEntry[K, V](key)
	e.born = c.refreshSeq.Add(1)
	e.hash = c.m.hash(key)
	return e
}

func newEntry[K comparable, V any](key K) *entry[K, V] {
	e := &entry[K, V]{key: key}
	e.pending.Store(&call{done: make(chan struct{})})
	return e
}

// found reports whether w is the word of a found entry.
func found(w uint64) bool { return w&(valuedBit|removedBit) == valuedBit }

// tryLease adds a lease unless the entry was removed or failed.
func (e *entry[K, V]) tryLease() bool { return e.tryAdd(1) }

// tryHold adds a hold unless the entry was removed or failed.
func (e *entry[K, V]) tryHold() bool { return e.tryAdd(holdUnit) }

func (e *entry[K, V]) tryAdd(n uint64) bool {
	for {
		w := e.word.Load()
		if w&(removedBit|failedBit) != 0 {
			return false
		}
		if e.word.CompareAndSwap(w, w+n) {
			return true
		}
	}
}

// addLeases adds n leases, which Counts.Freeze moves in from the slots of
// Cache.leases (n < 0 undoes a move that lost its race).
func (e *entry[K, V]) addLeases(n int64) { e.word.Add(uint64(n)) }

// removed reports whether the entry was removed.
func (e *entry[K, V]) removed() bool { return e.word.Load()&removedBit != 0 }

// unlease drops a lease and reports whether the caller must now close the
// value (the entry was removed, holds a value, and nothing else holds it).
func (e *entry[K, V]) unlease() (closeNow bool) {
	closeNow, _ = e.release()
	return closeNow
}

// release drops a lease, like unlease, and also reports whether it was
// the last lease of a parked entry (which must then go back to the idle
// sweep, see unpark). The lease count and the parked bit are read in the
// same atomic step, so a release never misses a park that the sweep made
// while the lease was out.
func (e *entry[K, V]) release() (closeNow, unpark bool) {
	w := e.word.Add(^uint64(0))
	return w&^parkedBit == removedBit|valuedBit, w&(leaseMask|parkedBit) == parkedBit
}

// parked reports whether the entry sits in Cache.parked.
func (e *entry[K, V]) parked() bool { return e.word.Load()&parkedBit != 0 }

// park marks the found entry parked and reports whether it is still
// leased; if not (its last lease was released before the mark), the caller
// must not park it and calls unparkBit. Under Cache.mu.
func (e *entry[K, V]) park() (leased bool) {
	return e.word.Or(parkedBit)&leaseMask != 0
}

// unparkBit clears the parked mark. Under Cache.mu.
func (e *entry[K, V]) unparkBit() { e.word.And(^parkedBit) }

// reserveNew gives the entry, new and not yet published, the reservation
// of the Lease or Acquire caller that makes it: it becomes that caller's
// lease if the build succeeds.
func (e *entry[K, V]) reserveNew() { e.word.Store(1) }

// markFailed makes the pending entry failed and returns the word before.
func (e *entry[K, V]) markFailed() uint64 { return e.word.Or(failedBit) }

// markFound makes the pending entry, not removed, found: its val and
// stamps are written before.
func (e *entry[K, V]) markFound() { e.word.Or(valuedBit) }

// markDetachedValue records that the build of an entry detached while
// pending returned a value, and reports whether nothing holds it (no
// Lease or Acquire waiter took it), so that it must be closed now.
func (e *entry[K, V]) markDetachedValue() (closeNow bool) {
	return e.word.Or(valuedBit) == removedBit
}

// unhold drops a hold; like unlease, it reports whether to close now.
func (e *entry[K, V]) unhold() (closeNow bool) {
	return e.word.Add(^(holdUnit-1))&^parkedBit == removedBit|valuedBit
}

// removeHeld sets removedBit and adds a hold in one step, for the removal
// of a found entry: the hold keeps the value open until OnEvict has
// returned, so that OnEvict of a value always ends before its Close starts.
// It reports false when the entry was removed already.
func (e *entry[K, V]) removeHeld() bool {
	for {
		w := e.word.Load()
		if w&removedBit != 0 {
			return false
		}
		if e.word.CompareAndSwap(w, (w|removedBit)+holdUnit) {
			return true
		}
	}
}

// markRemoved sets removedBit on an entry that is pending or failed (no
// value to notify about), or on a refresh's found entry that never went
// into the map, and reports whether it was not removed already.
func (e *entry[K, V]) markRemoved() bool {
	return e.word.Or(removedBit)&removedBit == 0
}
