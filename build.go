package rescache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// ErrBuildCycle is returned, at once, to a build that calls Get, Lease,
// Acquire or Refresh for a key whose build (a first build or a refresh) is
// running in its own chain of nested builds (most simply, its own key):
// waiting would wait for itself. Match it with
// errors.Is. A cycle through builds that separate callers started (the
// build of a waits for b while the build of b, started elsewhere, waits
// for a) is not detected: like any mutual wait it lasts until BuildTimeout.
var ErrBuildCycle = errors.New("rescache: build waits for itself")

// ErrBuildGoexit is the error the waiters of a build receive when the build
// function called runtime.Goexit (for example through t.FailNow in a test).
// Like a panic, it is never remembered by ErrorTTL. Match it with errors.Is.
//
// A build that runs on its caller's goroutine (the caller's ctx has no Done
// channel and there is no BuildTimeout) takes that caller with it, as
// Goexit does: that caller's call never returns. Every other waiter gets
// ErrBuildGoexit.
var ErrBuildGoexit = errors.New("rescache: build called runtime.Goexit")

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

// slow is the path of Get and Acquire when the key is not found and fresh:
// it waits for a pending build, starts one, answers a remembered error, or
// drops an expired entry and builds again. With lease, the returned entry
// holds a lease for the caller.
//
// A call counts once in Stats, however often it looks again: as a miss
// from its first wait for a build (it stays one if it then finds a value
// or a remembered error), otherwise as a hit or an error hit.
func (c *Cache[K, V]) slow(ctx context.Context, key K, lease bool) (*entry[K, V], error) {
	missed := false
	miss := func() {
		if !missed {
			missed = true
			c.ctr.misses.Add(1)
		}
	}
	for {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		e, ok := c.m.Load(key)
		if !ok {
			ne := c.newEntry(key)
			if lease {
				ne.word.Store(1) // our reservation
			}
			e, ok = c.m.LoadOrStore(key, ne)
			if !ok {
				c.ctr.pending.Add(1)
				miss()
				cl := ne.pending.Load()
				c.startBuild(ctx, ne)
				if got, err, retry := c.wait(ctx, ne, cl, lease); !retry {
					return got, err
				}
				continue
			}
		}
		w := e.word.Load()
		switch {
		case w&removedBit != 0:
			// Left the cache between Load and now; look again.
			c.deleteIfSame(e)
			continue
		case w&failedBit != 0:
			if c.errorTTL > 0 && c.advance() < e.stamp {
				if !missed {
					c.ctr.errorHits.Add(1)
				}
				return nil, e.pending.Load().err
			}
			c.forget(e)
			continue
		case w&valuedBit != 0:
			if c.tick > 0 {
				if reason, stale := c.expiry(e, w, c.clock()); stale {
					c.evict(e, reason)
					continue
				}
			}
			if lease && !e.tryLease() {
				continue
			}
			c.touch(e)
			if c.refreshAfter > 0 {
				c.maybeRefresh(e, c.clock())
			}
			if !missed {
				c.hot.add(1, 0, 0)
			}
			return e, nil
		default: // pending
			cl := e.pending.Load()
			if cl == nil {
				continue // finished meanwhile
			}
			if r := runOf[K, V](ctx); r != nil && r.waitsOn(cl) {
				return nil, fmt.Errorf("%w: %s", ErrBuildCycle, c.keyString(key))
			}
			if lease && !e.tryLease() {
				continue // removed or failed meanwhile
			}
			miss()
			if c.lfu != nil {
				c.lfu.reads.record(e.hash) // a request for the key, as a hit is
			}
			if got, err, retry := c.wait(ctx, e, cl, lease); !retry {
				return got, err
			}
		}
	}
}

// wait waits for e's build. With lease, the caller holds a reservation on e
// that becomes its lease on success and is dropped otherwise. retry says
// that the build's value may not be handed to this caller (a Get caller of
// a build that was detached: nothing keeps that value open) and that the
// caller must look again.
//
// A build that waits here for another build (a nested Get with the build's
// context) lends its build slot for the wait and takes one back before it
// returns, so nested builds never deadlock on slots and never run beyond
// MaxConcurrentBuilds.
func (c *Cache[K, V]) wait(ctx context.Context, e *entry[K, V], cl *call, lease bool) (got *entry[K, V], err error, retry bool) {
	select {
	case <-cl.done:
	default:
		if r := runOf[K, V](ctx); r != nil {
			r.lend()
			defer r.reclaim()
		}
		select {
		case <-cl.done:
		case <-ctx.Done():
			if lease && e.unlease() {
				c.closeEntry(e)
			}
			return nil, ctx.Err(), false
		}
	}
	if cl.err != nil {
		if lease {
			e.unlease() // a failed entry has no value to close
		}
		return nil, cl.err, false
	}
	if cl.detached && !lease {
		return nil, nil, true
	}
	return e, nil, false
}

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

// startBuild runs e's build: in the calling goroutine when the caller cannot
// stop waiting anyway (its ctx has no Done channel and there is no
// BuildTimeout), in a new goroutine otherwise, so that callers whose context
// ends can leave while the build goes on. It owns the count of
// c.ctr.pending that slow added for e.
func (c *Cache[K, V]) startBuild(ctx context.Context, e *entry[K, V]) {
	c.inflight.Add(1) // released by runBuild
	if c.closed.Load() {
		c.finish(e, *new(V), ErrClosed, false)
		c.ctr.pending.Add(-1)
		c.unhold()
		return
	}
	if ctx.Done() == nil && c.opts.BuildTimeout == 0 {
		c.runBuild(ctx, e)
		return
	}
	go c.runBuild(ctx, e)
}

// runBuild takes a build slot, calls build for e and finishes e with its
// result. It owns one count of c.inflight and one of c.ctr.pending, and
// returns both when it returns, however build exits.
//
// The outcome reaches e's waiters exactly once, whichever comes first:
//   - build returns or panics: finish with its value or error;
//   - build calls runtime.Goexit: the deferred finish below, with
//     ErrBuildGoexit (the Goexit then goes on, ending this goroutine);
//   - the build's context ends (BuildTimeout, Close): the AfterFunc
//     finishes with the context's cause at once, even if build ignores its
//     context; what build returns later is discarded and its value closed.
func (c *Cache[K, V]) runBuild(callerCtx context.Context, e *entry[K, V]) {
	defer c.unhold()
	defer c.ctr.pending.Add(-1)
	var zero V
	returned := false
	defer func() {
		if !returned { // runtime.Goexit in build: a build error
			c.ctr.buildErrors.Add(1)
			c.finish(e, zero, fmt.Errorf("%w (key %s)", ErrBuildGoexit, c.keyString(e.key)), false)
		}
	}()

	ctx, cancel := context.WithCancelCause(context.WithoutCancel(callerCtx))
	defer cancel(nil)
	stopClose := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	defer stopClose()

	// The slot is taken before BuildTimeout starts: a build that waited
	// for a slot and never ran is not a build error. Only Close ends the
	// wait for a slot, or for room (MaxEntries' close backlog, see room);
	// callers whose context ends leave meanwhile.
	//
	// A build takes its unit of room (MaxEntries' bound on values open,
	// see room) before its slot and keeps it until finish, which hands it
	// to the cached entry or gives it back. A nested build takes one
	// without waiting: its chain's first build holds one already, and a
	// nested build that waited for room held by its own chain could wait
	// for ever.
	if runOf[K, V](callerCtx) != nil {
		c.room.take()
	} else if !c.room.reserve(ctx) {
		returned = true
		c.finish(e, zero, context.Cause(ctx), false)
		return
	}
	unit := true // this run owns a unit of room; finish with a value takes it over
	defer func() {
		if unit {
			c.room.free()
		}
	}()
	if !c.acquireSlot(ctx) {
		returned = true
		c.finish(e, zero, context.Cause(ctx), false)
		return
	}
	r := &buildRun[K, V]{c: c, cl: e.pending.Load(), parent: runOf[K, V](callerCtx), slot: c.slots != nil}
	defer r.finishRun()

	if c.opts.BuildTimeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeoutCause(ctx, c.opts.BuildTimeout,
			fmt.Errorf("rescache: build of %s timed out after %v: %w", c.keyString(e.key), c.opts.BuildTimeout, context.DeadlineExceeded))
		defer cancelT()
	}
	c.inflight.Add(1)
	stopEnd := context.AfterFunc(ctx, func() {
		defer c.unhold()
		c.finish(e, zero, context.Cause(ctx), false)
	})
	defer func() {
		if stopEnd() {
			c.unhold()
		}
	}()

	c.debug("build started", e.key)
	c.ctr.builds.Add(1)
	start := time.Now()
	v, err, panicked := c.callBuild(context.WithValue(ctx, runKey[K, V]{}, r), e.key)
	took := time.Since(start)
	c.ctr.buildNanos.Add(int64(took))
	returned = true
	if err != nil {
		c.ctr.buildErrors.Add(1)
		if panicked {
			c.ctr.buildPanics.Add(1)
		}
		if ctx.Err() != nil {
			// The build's context ended (BuildTimeout or Close): say so.
			if cause := context.Cause(ctx); errors.Is(err, ctx.Err()) {
				err = cause
			} else {
				err = fmt.Errorf("%w: %w", cause, err)
			}
		}
	}
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: build finished",
			slog.String("key", c.keyString(e.key)), slog.Duration("duration", took), slog.Any("error", err))
	}
	unit = err != nil // with a value, finish owns the unit of room
	c.finish(e, v, err, err == nil)
}

// callBuild calls the build function, turning a panic into a *PanicError.
// A runtime.Goexit in build is not recovered: it unwinds through runBuild,
// whose deferred functions answer the waiters.
//
// Stats.Building counts the call while it runs, however it ends (a return,
// a panic or a Goexit), including while it waits for a nested build.
func (c *Cache[K, V]) callBuild(ctx context.Context, key K) (v V, err error, panicked bool) {
	c.ctr.building.Add(1)
	defer c.ctr.building.Add(-1)
	defer func() {
		if r := recover(); r != nil {
			pe := &PanicError{Key: key, Value: r, Stack: debug.Stack(), keyString: c.keyString(key)}
			c.warn("build panicked", key, pe)
			var zero V
			v, err, panicked = zero, pe, true
		}
	}()
	v, err = c.build(ctx, key)
	return v, err, false
}

// finish publishes the outcome of e's build, once: the first call wins, and
// a later call that carries a value closes it. ok says whether v is a value
// build returned (and so must be closed exactly once); such a call owns a
// unit of room (see room), which the entry keeps if it is cached and which
// is given back here otherwise, after the value's close (or at once, if a
// lease keeps the value open).
func (c *Cache[K, V]) finish(e *entry[K, V], v V, err error, ok bool) {
	if ok {
		c.inflight.Add(1) // the value is live until closeValue
		c.ctr.liveValues.Add(1)
	}
	cl := e.pending.Load()
	if cl == nil || !cl.finished.CompareAndSwap(false, true) {
		if ok {
			// Too late: the waiters were answered already.
			c.closeValue(e.key, v, true)
			c.room.free()
		}
		return
	}

	c.mu.Lock()
	now := c.advance()
	if ok && c.closed.Load() {
		// Built after Close: never cached; the waiters get ErrClosed.
		defer func() { // after the unlock
			c.closeValue(e.key, v, true)
			c.room.free()
		}()
		ok, err = false, ErrClosed
	}
	old, _ := cl.replaces.(*entry[K, V]) // a refresh build's found entry
	if !ok {
		cl.err = err
		e.stamp = satAdd(now, c.errorTTL)
		w := e.word.Or(failedBit)
		if old != nil {
			// A failed refresh: the old value stays; nothing is
			// remembered, the map never held e.
			c.refreshDoneLocked(old, cl, now, err)
		} else if c.errs != nil && w&removedBit == 0 && !c.closed.Load() && rememberable(err) {
			// Remembered: stays in the map, answered until e.stamp.
			c.errs.Add(e.key, e)
		} else {
			c.deleteIfSame(e)
		}
		c.mu.Unlock()
		close(cl.done)
		return
	}

	e.val = v
	c.stampBuilt(e, now)
	var victims []removal[K, V]
	var replaced removal[K, V]
	closeNow := false
	cached := false // e keeps the unit of room
	switch {
	case old != nil:
		// A refresh: swap the new entry in for the old one, if the old
		// one is still the key's found entry; otherwise (Invalidate,
		// eviction or expiry meanwhile) the new value is never cached.
		// It is found before it goes into the map (no caller can reach
		// it before), so no caller ever waits for it.
		e.word.Or(valuedBit)
		if r, ok := c.replaceLocked(old, e); ok {
			replaced, cached = r, true
		} else {
			e.word.Or(removedBit)
			cl.detached = true
			closeNow = true // never in the map: nobody holds it
		}
		c.refreshDoneLocked(old, cl, now, nil)
	case e.word.Load()&removedBit == 0:
		victims = c.makeRoomLocked()
		c.insertLocked(e)
		e.word.Or(valuedBit)
		cached = true
	default:
		cl.detached = true
		closeNow = e.word.Or(valuedBit) == removedBit // detached while pending, and unleased
	}
	c.mu.Unlock()
	close(cl.done)
	e.pending.Store(nil)
	if closeNow {
		c.closeValue(e.key, v, true)
	}
	if !cached {
		c.room.free()
	}
	if replaced.e != nil {
		// OnEvict(old, EvictReplaced) on the refresh's goroutine; the old
		// value closes at its last release.
		c.afterRemove(replaced)
	}
	// The victims are other keys': their hooks must not hold up this
	// key's callers.
	c.hooks.notify(victims...)
}

// rememberable reports whether ErrorTTL may remember err: a panic or a
// Goexit is a bug in build, not an answer about the key.
func rememberable(err error) bool {
	var pe *PanicError
	return !errors.As(err, &pe) && !errors.Is(err, ErrBuildGoexit)
}
