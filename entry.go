package rescache

import (
	"container/list"
	"fmt"
	"sync/atomic"
)

// The state of an entry lives in one atomic word, so that the hit path reads
// it with a single load and so that the decision to close a value is taken by
// exactly one atomic transition:
//
//	bits 0-59  leases: leases held, plus leases reserved by Acquire callers
//	           waiting on a pending build
//	valuedBit  the build returned a value (found, or detached with a value)
//	failedBit  the build failed; err is set
//	removedBit the entry left the cache (evicted, invalidated, closed, or
//	           detached while pending); it never comes back
//
// An entry is pending while neither valuedBit nor failedBit is set, and found
// while valuedBit is set and removedBit is not. Once removedBit is set the
// lease count only goes down (Acquire refuses a removed entry), so the word
// reaches removedBit|valuedBit with no lease exactly once, and the operation
// that makes it so (the removal, the last release, or the finish of a build
// that was detached) closes the value.
const (
	valuedBit  uint64 = 1 << 62
	failedBit  uint64 = 1 << 61
	removedBit uint64 = 1 << 60
	leaseMask  uint64 = removedBit - 1
)

// entry is one key's slot in the cache. A pending entry becomes found or
// failed once; a found entry is removed once.
type entry[K comparable, V any] struct {
	key K

	// val is written once, before valuedBit is set (and before the
	// pending call's done is closed), and read only after.
	val V

	word atomic.Uint64 // see the constants above

	// used is the clock stamp of the last Get, Acquire or release, written
	// without a lock on the hit path (see Cache.now).
	used atomic.Int64

	// pending holds what only a pending or failed entry needs; it is
	// cleared when the build succeeds, so a found entry does not keep the
	// done channel.
	pending atomic.Pointer[call]

	// stamp is, for a found entry, the clock stamp of the end of its build;
	// for a failed entry kept by ErrorTTL, the stamp until which its error
	// is remembered. Written before done is closed; read-only afterwards.
	stamp int64

	// Guarded by Cache.mu.
	heapIdx  int32         // index in Cache.order; -1 when not there
	checking bool          // a health check of the entry is running
	nodeUsed int64         // the used stamp by which the entry sits in Cache.order
	ageElem  *list.Element // element in Cache.byAge, nil when not there
}

// call is the state of a build in flight, shared by its waiters: they wait
// for done, then read err, or the entry's val when err is nil. Like
// singleflight's call, the outcome is written once before done is closed
// and read only after. A failed entry keeps its call, for err.
type call struct {
	done chan struct{}
	err  error
	// finished is set by whoever finishes the build first: the build
	// itself, or its context ending (BuildTimeout, Close).
	finished atomic.Bool
}

func newEntry[K comparable, V any](key K) *entry[K, V] {
	e := &entry[K, V]{key: key, heapIdx: -1}
	e.pending.Store(&call{done: make(chan struct{})})
	return e
}

// found reports whether w is the word of a found entry.
func found(w uint64) bool { return w&(valuedBit|removedBit) == valuedBit }

// tryLease adds a lease unless the entry was removed or failed.
func (e *entry[K, V]) tryLease() bool {
	for {
		w := e.word.Load()
		if w&(removedBit|failedBit) != 0 {
			return false
		}
		if e.word.CompareAndSwap(w, w+1) {
			return true
		}
	}
}

// unlease drops a lease and reports whether the caller must now close the
// value (the entry was removed, holds a value, and this was its last lease).
func (e *entry[K, V]) unlease() (closeNow bool) {
	return e.word.Add(^uint64(0)) == removedBit|valuedBit
}

// markRemoved sets removedBit and reports whether the caller must close the
// value now (it holds one and no lease is out). It returns false when the
// entry was already removed.
func (e *entry[K, V]) markRemoved() (closeNow bool) {
	old := e.word.Or(removedBit)
	return old&removedBit == 0 && old == valuedBit
}

// PanicError is the error a build's panic becomes. Every caller waiting for
// that build receives it; use errors.As to tell it from the build's own
// errors.
type PanicError struct {
	// Key is the key whose build panicked.
	Key any
	// Value is what the build passed to panic.
	Value any
	// Stack is the stack of the panicking goroutine, as runtime/debug.Stack
	// formats it.
	Stack []byte

	keyString string // Key through Options.KeyString
}

// Error returns a one-line description; the stack is in the Stack field.
func (p *PanicError) Error() string {
	key := p.keyString
	if key == "" {
		key = fmt.Sprint(p.Key)
	}
	return fmt.Sprintf("rescache: build of %s panicked: %v", key, p.Value)
}

// Unwrap returns the panic value when it is an error.
func (p *PanicError) Unwrap() error {
	if err, ok := p.Value.(error); ok {
		return err
	}
	return nil
}
