package rescache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

// ErrBuildGoexit is the error the waiters of a build receive when the build
// function called runtime.Goexit (for example through t.FailNow in a test).
// Like a panic, it is never remembered by ErrorTTL. Match it with errors.Is.
//
// A build that runs on its caller's goroutine (the caller's ctx has no Done
// channel and there is no BuildTimeout) takes that caller with it, as
// Goexit does: that caller's call never returns. Every other waiter gets
// ErrBuildGoexit.
var ErrBuildGoexit = errors.New("rescache: build called runtime.Goexit")

// PanicError is the error a panic of user code becomes: of a build (every
// caller waiting for that build receives it; use errors.As to tell it from
// the build's own errors), and of Close, OnEvict and HealthCheck (counted
// and logged like their errors; a Close's is returned by Close or
// Shutdown). Every one keeps the value and the stack, and is logged at Warn
// with both.
type PanicError struct {
	// Op is the user code that panicked: "build" (also when empty),
	// "Close", "OnEvict" or "HealthCheck".
	Op string
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
	op := p.Op
	if op == "" {
		op = "build"
	}
	return fmt.Sprintf("rescache: %s of %s panicked: %v", op, key, p.Value)
}

// recovered turns r, recovered from a panic of user code (op as in
// PanicError.Op) for key, into a *PanicError with the panicking stack: the
// one recover policy of the cache. Every hook calls it in its deferred
// recover; the caller counts and logs the error as that hook's errors are
// (c.warn adds the stack).
func (c *Cache[K, V]) recovered(op string, key K, r any) *PanicError {
	return &PanicError{Op: op, Key: key, Value: r, Stack: debug.Stack(), keyString: c.keyString(key)}
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
			var cl *call
			if e, cl = c.buildAbsent(ctx, key, lease, &missed); cl != nil {
				if got, err, retry := c.wait(ctx, e, cl, lease); !retry {
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
			if c.errorTTL > 0 && c.advance() < e.pending.Load().until {
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
			if c.reads != nil { // a request for the key, as a hit is
				if r := c.reads.record(e); r >= 0 && c.reads.evicting.Load() {
					c.drainReads(r)
				}
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
	if err := c.waitDone(ctx, cl); err != nil {
		if lease && e.unlease() {
			c.closeEntry(e)
		}
		return nil, err, false
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

// waitDone waits for cl's build, honouring ctx; like wait, a build that
// waits here lends its slot.
func (c *Cache[K, V]) waitDone(ctx context.Context, cl *call) error {
	select {
	case <-cl.done:
		return nil
	default:
	}
	if r := runOf[K, V](ctx); r != nil {
		r.lend()
		defer r.reclaim()
	}
	select {
	case <-cl.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// buildAbsent publishes a new pending entry for key and starts its build,
// and returns it with its call; with lease the entry carries the caller's
// reservation. The call counts as a miss, before the build starts, unless
// *missed says it was counted already. If another caller published an
// entry first, it returns that one and a nil call.
func (c *Cache[K, V]) buildAbsent(ctx context.Context, key K, lease bool, missed *bool) (*entry[K, V], *call) {
	ne := c.newEntry(key)
	if lease {
		ne.reserveNew()
	}
	if e, loaded := c.m.LoadOrStore(ne); loaded {
		return e, nil
	}
	cl := ne.pending.Load() // before the build, which clears it on success
	c.ctr.pending.Add(1)
	if !*missed {
		*missed = true
		c.ctr.misses.Add(1)
	}
	c.launch(ctx, ne, ctx.Done() == nil && c.opts.BuildTimeout == 0)
	return ne, cl
}

// launch runs e's build: inline, in the calling goroutine, when the caller
// cannot stop waiting anyway (its ctx has no Done channel and there is no
// BuildTimeout), in a new goroutine otherwise, so that callers whose context
// ends can leave while the build goes on. It owns the count of
// c.ctr.pending that its caller added for e, and hands it to runBuild.
func (c *Cache[K, V]) launch(ctx context.Context, e *entry[K, V], inline bool) {
	c.inflight.Add(1) // released by runBuild
	if c.closed.Load() {
		c.finish(e, *new(V), ErrClosed, false)
		c.ctr.pending.Add(-1)
		c.inflightDone()
		return
	}
	if inline {
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
	defer c.inflightDone()
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
		defer c.inflightDone()
		c.finish(e, zero, context.Cause(ctx), false)
	})
	defer func() {
		if stopEnd() {
			c.inflightDone()
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
			pe := c.recovered("build", key, r)
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
		cl.until = satAdd(now, c.errorTTL)
		w := e.markFailed()
		if old != nil {
			c.finishRefreshLocked(old, e, cl, now, err)
		} else if c.errs != nil && w&removedBit == 0 && !c.closed.Load() && rememberable(err) {
			// Remembered: stays in the map, answered until cl.until.
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
		replaced, cached = c.finishRefreshLocked(old, e, cl, now, nil)
		closeNow = !cached
	case e.word.Load()&removedBit == 0:
		victims = c.makeRoomLocked()
		c.insertLocked(e)
		e.markFound()
		cached = true
	default:
		cl.detached = true
		closeNow = e.markDetachedValue()
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

// stampBuilt sets the stamps of e, whose build succeeded at clock now: its
// use, its deadline and, with RefreshAfter, its refresh state; its jitter,
// drawn once here, shortens its lifetime and its refresh age alike.
func (c *Cache[K, V]) stampBuilt(e *entry[K, V], now int64) {
	e.used.Store(now)
	var jitter int64
	if c.jitter > 0 {
		jitter = rand.Int64N(c.jitter)
	}
	if c.lifetime > 0 {
		e.life = &lifetime{deadline: satAdd(now, c.lifetime-jitter), idx: -1}
	}
	if c.refreshAfter > 0 {
		rs := new(refreshState)
		rs.at.Store(satAdd(now, c.refreshAfter-jitter))
		e.refresh.Store(rs)
	}
}
