package rescache

import (
	"context"
	"errors"
	"sync"
)

// Build slots (Options.MaxConcurrentBuilds) and build chains: a build run
// holds a slot while its function runs, lends it while it waits for a
// nested build, and takes one back before that wait returns; the chain of
// runs, carried by the builds' contexts, is how a wait for a build of the
// same chain is refused (ErrBuildCycle).

// ErrBuildCycle is returned, at once, to a build that calls Get, Lease,
// Acquire or Refresh for a key whose build (a first build or a refresh) is
// running in its own chain of nested builds (most simply, its own key):
// waiting would wait for itself. Match it with
// errors.Is. A cycle through builds that separate callers started (the
// build of a waits for b while the build of b, started elsewhere, waits
// for a) is not detected: like any mutual wait it lasts until BuildTimeout.
var ErrBuildCycle = errors.New("rescache: build waits for itself")

// buildRun is one run of a build function. Its build's context carries it,
// so that a Get or Acquire called with that context (a nested build) can
// tell which build waits: to lend that build's slot for the wait, and to
// refuse a wait for a build of the same chain (ErrBuildCycle). A context
// that outlives its build (context.WithoutCancel keeps values) carries a
// run that is done, which lends nothing.
type buildRun[K comparable, V any] struct {
	c      *Cache[K, V]
	cl     *call           // the call of the build this run is; read-only
	parent *buildRun[K, V] // the run whose context started this one, if any

	mu sync.Mutex // protects the fields below
	// slot says that the run holds a build slot now. A run holds one while
	// its build function runs, except while it waits for another build.
	slot bool
	// lent counts the waits in progress that lent the slot.
	lent int
	// reclaiming is set while a wait that ended takes a slot back.
	reclaiming bool
	// done is set when the build function has returned.
	done bool
}

type runKey[K comparable, V any] struct{}

// runOf returns the build run that ctx belongs to, for this cache's types.
func runOf[K comparable, V any](ctx context.Context) *buildRun[K, V] {
	r, _ := ctx.Value(runKey[K, V]{}).(*buildRun[K, V])
	return r
}

// waitsOn reports whether cl is the call of a running build in r's chain:
// a wait for it from r's context would wait for itself. The chain runs
// through nested Get, Lease, Acquire and Refresh calls alike, and a
// refresh's build is a run like any other.
func (r *buildRun[K, V]) waitsOn(cl *call) bool {
	for ; r != nil; r = r.parent {
		r.mu.Lock()
		done := r.done
		r.mu.Unlock()
		if !done && r.cl == cl {
			return true
		}
	}
	return false
}

// lend gives r's slot back for the length of a wait.
func (r *buildRun[K, V]) lend() {
	r.mu.Lock()
	r.lent++
	give := r.lent == 1 && r.slot
	if give {
		r.slot = false
	}
	r.mu.Unlock()
	if give {
		r.c.releaseSlot()
	}
}

// reclaim ends a wait that lend started: the last one takes a slot back
// before the build goes on. It waits for a slot however long it takes,
// Close or not: slots are held only by build functions that run, and a
// build function that went on without one would break MaxConcurrentBuilds
// (after Close too, while cancelled builds wind down). A wait here never
// waits for itself: a run that waits for another build has lent its slot.
func (r *buildRun[K, V]) reclaim() {
	r.mu.Lock()
	r.lent--
	if r.lent > 0 || r.slot || r.reclaiming || r.done || r.c.slots == nil {
		r.mu.Unlock()
		return
	}
	r.reclaiming = true
	r.mu.Unlock()
	r.c.acquireSlot(context.Background())
	r.mu.Lock()
	r.reclaiming = false
	switch {
	case r.lent > 0 || r.done:
		// Lent again, or finished, while this wait took its slot back.
		r.mu.Unlock()
		r.c.releaseSlot()
		return
	default:
		r.slot = true
	}
	r.mu.Unlock()
}

// finishRun marks r done and gives its slot back.
func (r *buildRun[K, V]) finishRun() {
	r.mu.Lock()
	r.done = true
	give := r.slot
	r.slot = false
	r.mu.Unlock()
	if give {
		r.c.releaseSlot()
	}
}

// acquireSlot takes a build slot, waiting until one is free or ctx ends.
func (c *Cache[K, V]) acquireSlot(ctx context.Context) bool {
	if c.slots == nil {
		return true
	}
	select {
	case c.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// tryAcquireSlot takes a build slot if one is free now.
func (c *Cache[K, V]) tryAcquireSlot() bool {
	if c.slots == nil {
		return true
	}
	select {
	case c.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (c *Cache[K, V]) releaseSlot() {
	if c.slots != nil {
		<-c.slots
	}
}
