package rescache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/puzpuzpuz/xsync/v3"
)

// ErrClosed is returned by Get and Acquire once Close or Shutdown has been
// called, and to callers waiting for a build that Close cancelled. Match it
// with errors.Is.
var ErrClosed = errors.New("rescache: cache closed")

// Cache holds at most one value per key, built lazily by the build function
// given to [New], shared by every caller, and closed once it leaves the
// cache.
//
// An entry is absent, pending (its build is running) or found. The first
// caller of an absent key starts the build; callers that arrive while it is
// pending wait for it, and all of them receive the same value or the same
// error. Builds of different keys run at the same time, and no lock is held
// while build, Close or OnEvict run, so a build may call Get for another key.
//
// A Cache is safe for concurrent use by multiple goroutines. Call Close, or
// Shutdown, when done with it: that stops its janitor goroutine and closes
// every value it holds.
type Cache[K comparable, V any] struct {
	build func(ctx context.Context, key K) (V, error)
	opts  Options[K, V] // a copy with defaults; read-only after New
	log   *slog.Logger  // opts.Logger; nil means no logging

	m *xsync.MapOf[K, *entry[K, V]] // pending, found and remembered-failed entries

	// The clock, when the cache needs one (tick > 0): now is nanoseconds
	// since epoch, set from the system clock by the janitor every tick and
	// by the slow path (builds, expiry near a deadline), and read by the hit
	// path instead of the system clock. It never goes back.
	epoch time.Time
	now   atomic.Int64
	tick  int64 // clock resolution in nanoseconds; 0 = no clock

	idle, lifetime, errorTTL int64 // Options durations in nanoseconds

	hot    pcounter  // hits, and leases out (taken minus released)
	ctr    counters  // everything else
	leaseP sync.Pool // of *lease[K, V], reused after their release

	slots chan struct{} // one token per build in flight; nil = unbounded

	ctx    context.Context // parent of every build's context; ends at Close
	cancel context.CancelFunc
	closed atomic.Bool

	// inflight counts what Shutdown waits for: running builds, the
	// janitor and health checks, and built values not yet closed. drained
	// is closed once, when it is zero after Close.
	inflight  atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	// closeOnce runs close; closeErr is written inside it and read after
	// Do returns, so every Close, concurrent or later, returns the first
	// one's result.
	closeOnce sync.Once
	closeErr  error

	mu         sync.Mutex                      // protects the fields below, and the entries' heapIdx, nodeUsed, ageElem and checking
	order      recency[K, V]                   // found entries, least recently used first (LRU and idle)
	byAge      *list.List                      // found entries in build order (lifetime), when MaxLifetime > 0
	errs       *simplelru.LRU[K, *entry[K, V]] // failed entries remembered by ErrorTTL, oldest failure first
	lateErrs   []error                         // Close errors of values closed after Close returned
	janitorOff chan struct{}                   // closed by Close to stop the janitor; nil when there is none
}

// New returns a cache whose values are built by build. opts may be nil; New
// copies it and never modifies it. It returns an error when build is nil or
// when an option is negative or inconsistent.
//
// build runs once per key at a time, under a context that keeps the values
// of the starting caller's context but not its cancellation, bounded by
// Options.BuildTimeout and cancelled by Close. A build that returns an error
// or panics caches nothing.
func New[K comparable, V any](build func(ctx context.Context, key K) (V, error), opts *Options[K, V]) (*Cache[K, V], error) {
	if build == nil {
		return nil, errors.New("rescache: New: build function is nil")
	}
	var o Options[K, V]
	if opts != nil {
		o = *opts
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	c := &Cache[K, V]{
		build:    build,
		opts:     o,
		log:      o.Logger,
		m:        xsync.NewMapOf[K, *entry[K, V]](),
		epoch:    time.Now(),
		idle:     int64(o.IdleTimeout),
		lifetime: int64(o.MaxLifetime),
		errorTTL: int64(o.ErrorTTL),
		hot:      newPcounter(),
		drained:  make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if o.MaxConcurrentBuilds > 0 {
		c.slots = make(chan struct{}, o.MaxConcurrentBuilds)
	}
	if o.MaxLifetime > 0 {
		c.byAge = list.New()
	}
	if o.ErrorTTL > 0 {
		// The onEvict callback runs inside errs.Add, under c.mu: it only
		// drops the forgotten entry from the map.
		c.errs, _ = simplelru.NewLRU(o.MaxErrorEntries, func(_ K, e *entry[K, V]) { c.deleteIfSame(e) })
	}
	if needsJanitor(&o) {
		c.tick = int64(o.ClockResolution)
		c.janitorOff = make(chan struct{})
		c.inflight.Add(1)
		go c.janitor()
	}
	return c, nil
}

func needsJanitor[K comparable, V any](o *Options[K, V]) bool {
	return o.MaxEntries > 0 || o.IdleTimeout > 0 || o.MaxLifetime > 0 || o.ErrorTTL > 0 || o.HealthCheck != nil
}

// Get returns the value for key, building it if the key is absent and
// waiting for the build if one is running. It takes no lease: the value may
// be closed by an eviction, an Invalidate or Close while the caller still
// uses it. Use Get for values that stay usable after Close (or whose users
// tolerate it, such as a *sql.DB whose queries then fail cleanly), and
// [Cache.Acquire] when a value must stay open for the span of its use.
//
// If ctx ends while Get waits, Get returns ctx.Err() at once; the build goes
// on for the other callers and its value is cached. After Close, Get returns
// [ErrClosed].
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.use(e, w) {
			c.hot.add(1, 0)
			return e.val, nil
		}
	}
	e, err := c.slow(ctx, key, false)
	if err != nil {
		var zero V
		return zero, err
	}
	return e.val, nil
}

// Acquire returns the value for key like Get, with a lease: the value is not
// closed before release is called, even if its entry is evicted,
// invalidated or the cache closed meanwhile (the entry leaves the cache at
// once, so the next call builds a fresh value, and the old value is closed
// at its last release). Call release exactly once when done; later calls do
// nothing. On error, release is a no-op and is not nil.
func (c *Cache[K, V]) Acquire(ctx context.Context, key K) (v V, release func(), err error) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.use(e, w) && e.tryLease() {
			c.hot.add(1, 1)
			return e.val, c.newLease(e), nil
		}
	}
	e, err := c.slow(ctx, key, true)
	if err != nil {
		var zero V
		return zero, noRelease, err
	}
	c.hot.add(0, 1)
	return e.val, c.newLease(e), nil
}

func noRelease() {}

// lease is one Acquire's hold on an entry. Leases are reused through
// c.leaseP; gen tells one use from the next, so that a second call of a
// release func is a no-op even after its lease was reused.
type lease[K comparable, V any] struct {
	gen atomic.Uint64
	c   *Cache[K, V]
	e   *entry[K, V]
}

// newLease returns the release func of a lease already added to e's word
// (and counted in c.hot). The closure is the one allocation of an Acquire:
// it carries the generation that makes release idempotent.
func (c *Cache[K, V]) newLease(e *entry[K, V]) func() {
	l, _ := c.leaseP.Get().(*lease[K, V])
	if l == nil {
		l = &lease[K, V]{c: c}
	}
	l.e = e
	gen := l.gen.Load()
	return func() { l.release(gen) }
}

// release ends the lease if it is still at generation gen.
func (l *lease[K, V]) release(gen uint64) {
	if !l.gen.CompareAndSwap(gen, gen+1) {
		return // released already
	}
	c, e := l.c, l.e // ours until Put
	l.e = nil
	c.leaseP.Put(l)
	c.hot.add(0, -1)
	if c.tick > 0 {
		c.touch(e) // the idle timeout runs from the release
	}
	if e.unlease() {
		c.closeLate(e.key, e.val)
	}
}

// Peek returns the value of key if its entry is found. It never builds,
// never waits, and does not count as a use (for recency, idle time or
// Stats).
func (c *Cache[K, V]) Peek(key K) (V, bool) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.fresh(e, w) {
			return e.val, true
		}
	}
	var zero V
	return zero, false
}

// Range calls f for each found entry, in no particular order, until f
// returns false. It takes no lease and does not count as a use; the value
// may be evicted while f runs. Entries added or removed during Range may or
// may not be visited.
func (c *Cache[K, V]) Range(f func(key K, v V) bool) {
	c.m.Range(func(key K, e *entry[K, V]) bool {
		if w := e.word.Load(); found(w) && c.fresh(e, w) {
			return f(key, e.val)
		}
		return true
	})
}

// Invalidate removes key's entry now and reports whether there was one. A
// found value is closed once no lease holds it (at once if none does). For a
// pending key, the callers already waiting receive that build's result, new
// callers start a fresh build, and the old build's value is never cached and
// is closed once unleased. A remembered build error (ErrorTTL) is
// forgotten.
func (c *Cache[K, V]) Invalidate(key K) bool {
	e, ok := c.m.Load(key)
	if !ok {
		return false
	}
	c.mu.Lock()
	w := e.word.Load()
	switch {
	case w&removedBit != 0:
		c.mu.Unlock()
		return false
	case w&valuedBit != 0 && e.heapIdx >= 0:
		closeNow := c.removeLocked(e, EvictInvalidated)
		c.mu.Unlock()
		c.afterRemove(e, EvictInvalidated, closeNow)
		return true
	case w&failedBit != 0:
		if c.errs != nil {
			c.errs.Remove(e.key) // calls deleteIfSame
		}
		c.deleteIfSame(e)
		e.markRemoved()
		c.mu.Unlock()
		return true
	default:
		// Pending: detach it. The build's finish sees removedBit (under
		// c.mu) and does not cache the value.
		e.markRemoved()
		c.deleteIfSame(e)
		c.mu.Unlock()
		c.debug("build detached", e.key)
		return true
	}
}

// Len returns the number of found entries.
func (c *Cache[K, V]) Len() int { return int(c.ctr.entries.Load()) }

// Stats returns a snapshot of the cache's counters.
func (c *Cache[K, V]) Stats() Stats {
	hits, leases := c.hot.load()
	s := c.ctr.snapshot(uint64(hits))
	s.Leased = int(leases)
	return s
}

// slow is the path of Get and Acquire when the key is not found and fresh:
// it waits for a pending build, starts one, answers a remembered error, or
// drops an expired entry and builds again. With lease, the returned entry
// holds a lease for the caller.
func (c *Cache[K, V]) slow(ctx context.Context, key K, lease bool) (*entry[K, V], error) {
	for {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		e, ok := c.m.Load(key)
		if !ok {
			ne := newEntry[K, V](key)
			if lease {
				ne.word.Store(1) // our reservation
			}
			e, ok = c.m.LoadOrStore(key, ne)
			if !ok {
				c.ctr.pending.Add(1)
				c.ctr.misses.Add(1)
				cl := ne.pending.Load()
				c.startBuild(ctx, ne)
				return c.wait(ctx, ne, cl, lease)
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
				c.ctr.errorHits.Add(1)
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
			c.hot.add(1, 0)
			return e, nil
		default: // pending
			cl := e.pending.Load()
			if cl == nil {
				continue // finished meanwhile
			}
			if lease && !e.tryLease() {
				continue // removed or failed meanwhile
			}
			c.ctr.misses.Add(1)
			return c.wait(ctx, e, cl, lease)
		}
	}
}

// wait waits for e's build. With lease, the caller holds a reservation on e
// that becomes its lease on success and is dropped otherwise.
func (c *Cache[K, V]) wait(ctx context.Context, e *entry[K, V], cl *call, lease bool) (*entry[K, V], error) {
	select {
	case <-cl.done:
	default:
		select {
		case <-cl.done:
		case <-ctx.Done():
			if lease && e.unlease() {
				c.closeLate(e.key, e.val)
			}
			return nil, ctx.Err()
		}
	}
	if cl.err != nil {
		if lease {
			e.unlease() // a failed entry has no value to close
		}
		return nil, cl.err
	}
	return e, nil
}

// startBuild runs e's build: in the calling goroutine when the caller cannot
// stop waiting anyway (its ctx has no Done channel and there is no
// BuildTimeout), in a new goroutine otherwise, so that callers whose context
// ends can leave while the build goes on.
func (c *Cache[K, V]) startBuild(ctx context.Context, e *entry[K, V]) {
	c.inflight.Add(1) // released by runBuild
	if c.closed.Load() {
		c.finish(e, *new(V), ErrClosed, false)
		c.unhold()
		return
	}
	if ctx.Done() == nil && c.opts.BuildTimeout == 0 {
		c.runBuild(ctx, e)
		return
	}
	go c.runBuild(ctx, e)
}

// buildSlotKey marks a build's context as holding a build slot, so that a
// build that calls Get for another key does not wait for a second slot (and
// deadlock when MaxConcurrentBuilds is 1).
type buildSlotKey struct{}

// runBuild calls build for e and finishes e with its result. It owns one
// count of c.inflight.
func (c *Cache[K, V]) runBuild(callerCtx context.Context, e *entry[K, V]) {
	defer c.unhold()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(callerCtx))
	defer cancel(nil)
	stopClose := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	defer stopClose()
	if c.opts.BuildTimeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeoutCause(ctx, c.opts.BuildTimeout,
			fmt.Errorf("rescache: build of %s timed out after %v: %w", c.opts.KeyString(e.key), c.opts.BuildTimeout, context.DeadlineExceeded))
		defer cancelT()
	}
	// When the build's context ends first (BuildTimeout or Close), the
	// waiters are answered at once with its cause, even if build ignores
	// its context; whatever build returns later is discarded (and its value
	// closed).
	c.inflight.Add(1)
	stopEnd := context.AfterFunc(ctx, func() {
		defer c.unhold()
		c.finish(e, *new(V), context.Cause(ctx), false)
	})
	defer func() {
		if stopEnd() {
			c.unhold()
		}
	}()

	buildCtx := ctx
	if c.slots != nil && callerCtx.Value(buildSlotKey{}) == nil {
		select {
		case c.slots <- struct{}{}:
			defer func() { <-c.slots }()
		case <-ctx.Done():
			// Finish here: the deferred stopEnd may stop the AfterFunc
			// before it runs (ctx.Done is closed before AfterFuncs are
			// started).
			c.finish(e, *new(V), context.Cause(ctx), false)
			return
		}
		buildCtx = context.WithValue(ctx, buildSlotKey{}, true)
	}

	c.debug("build started", e.key)
	c.ctr.builds.Add(1)
	start := time.Now()
	v, err, panicked := c.callBuild(buildCtx, e.key)
	took := time.Since(start)
	c.ctr.buildNanos.Add(int64(took))
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
			slog.String("key", c.opts.KeyString(e.key)), slog.Duration("duration", took), slog.Any("error", err))
	}
	c.finish(e, v, err, err == nil)
}

// callBuild calls the build function, turning a panic into a *PanicError.
func (c *Cache[K, V]) callBuild(ctx context.Context, key K) (v V, err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			pe := &PanicError{Key: key, Value: r, Stack: debug.Stack(), keyString: c.opts.KeyString(key)}
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
// build returned (and so must be closed exactly once).
func (c *Cache[K, V]) finish(e *entry[K, V], v V, err error, ok bool) {
	if ok {
		c.inflight.Add(1) // the value is live until closeValue
		c.ctr.liveValues.Add(1)
	}
	cl := e.pending.Load()
	if cl == nil || !cl.finished.CompareAndSwap(false, true) {
		if ok {
			// Too late: the waiters were answered already.
			c.closeLate(e.key, v)
		}
		return
	}
	c.ctr.pending.Add(-1)

	c.mu.Lock()
	now := c.advance()
	if ok && c.closed.Load() {
		// Built after Close: never cached; the waiters get ErrClosed.
		defer c.closeLate(e.key, v) // after the unlock
		ok, err = false, ErrClosed
	}
	if !ok {
		cl.err = err
		e.stamp = now + c.errorTTL
		w := e.word.Or(failedBit)
		var pe *PanicError
		if c.errs != nil && w&removedBit == 0 && !c.closed.Load() && !errors.As(err, &pe) {
			// Remembered: stays in the map, answered until e.stamp.
			// A panic is not remembered: it is a bug, not an answer.
			c.errs.Add(e.key, e)
		} else {
			c.deleteIfSame(e)
		}
		c.mu.Unlock()
		close(cl.done)
		return
	}

	e.val = v
	e.stamp = now
	e.used.Store(now)
	var victims []removal[K, V]
	if e.word.Load()&removedBit == 0 {
		victims = c.makeRoomLocked()
		c.insertLocked(e)
	}
	closeNow := e.word.Or(valuedBit) == removedBit // detached while pending, and unleased
	c.mu.Unlock()
	close(cl.done)
	e.pending.Store(nil)
	if closeNow {
		c.closeLate(e.key, v)
	}
	c.afterRemoveAll(victims)
}

// unhold drops one count of c.inflight and signals Shutdown when it reaches
// zero after Close.
func (c *Cache[K, V]) unhold() {
	if c.inflight.Add(-1) == 0 && c.closed.Load() {
		c.drainOnce.Do(func() { close(c.drained) })
	}
}

// closeValue closes a value with the Closer hook. It is called exactly once
// per value build returned, outside every lock, and releases the value's
// count of c.inflight.
func (c *Cache[K, V]) closeValue(key K, v V) error {
	defer c.unhold()
	c.ctr.liveValues.Add(-1)
	c.ctr.closes.Add(1)
	start := time.Now()
	err := c.callClose(key, v)
	if err != nil {
		c.ctr.closeErrors.Add(1)
		c.warn("close failed", key, err)
	}
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: closed",
			slog.String("key", c.opts.KeyString(key)), slog.Duration("duration", time.Since(start)), slog.Any("error", err))
	}
	return err
}

// closeLate is closeValue for closes that Close does not make itself (at a
// release, at the end of a detached build): an error after Close is kept for
// Shutdown to return.
func (c *Cache[K, V]) closeLate(key K, v V) {
	if err := c.closeValue(key, v); err != nil && c.closed.Load() {
		c.mu.Lock()
		c.lateErrs = append(c.lateErrs, err)
		c.mu.Unlock()
	}
}

func (c *Cache[K, V]) callClose(key K, v V) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rescache: close of %s panicked: %v", c.opts.KeyString(key), r)
		}
	}()
	if c.opts.Close != nil {
		return c.opts.Close(key, v)
	}
	if cl, ok := any(v).(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// afterRemove runs, outside every lock, what follows the removal of a found
// entry: OnEvict, then the close if no lease holds the value.
func (c *Cache[K, V]) afterRemove(e *entry[K, V], reason EvictReason, closeNow bool) {
	if err := c.notifyRemoved(e, reason, closeNow); err != nil && c.closed.Load() {
		c.mu.Lock()
		c.lateErrs = append(c.lateErrs, err)
		c.mu.Unlock()
	}
}

// afterRemoveAll is afterRemove for several entries: every OnEvict first,
// then the closes, so that a slow Closer does not delay the other entries'
// OnEvict.
func (c *Cache[K, V]) afterRemoveAll(rs []removal[K, V]) {
	for _, r := range rs {
		c.afterRemove(r.e, r.reason, false)
	}
	for _, r := range rs {
		if r.closeNow {
			c.closeLate(r.e.key, r.e.val)
		}
	}
}

// notifyRemoved calls OnEvict and, when closeNow, closes the value,
// returning the close error.
func (c *Cache[K, V]) notifyRemoved(e *entry[K, V], reason EvictReason, closeNow bool) error {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: evicted",
			slog.String("key", c.opts.KeyString(e.key)), slog.String("reason", reason.String()))
	}
	if c.opts.OnEvict != nil {
		c.callOnEvict(e, reason)
	}
	if closeNow {
		return c.closeValue(e.key, e.val)
	}
	return nil
}

func (c *Cache[K, V]) callOnEvict(e *entry[K, V], reason EvictReason) {
	defer func() {
		if r := recover(); r != nil {
			c.warn("OnEvict panicked", e.key, fmt.Errorf("%v", r))
		}
	}()
	c.opts.OnEvict(e.key, e.val, reason)
}

// deleteIfSame removes key's map slot if it still holds e. The function
// given to Compute runs under an xsync bucket lock; it is ours and trivial.
func (c *Cache[K, V]) deleteIfSame(e *entry[K, V]) {
	c.m.Compute(e.key, func(old *entry[K, V], loaded bool) (*entry[K, V], bool) {
		return old, !loaded || old == e
	})
}

// forget drops a failed entry whose ErrorTTL has passed.
func (c *Cache[K, V]) forget(e *entry[K, V]) {
	c.mu.Lock()
	if c.errs != nil {
		if cur, ok := c.errs.Peek(e.key); ok && cur == e {
			c.errs.Remove(e.key)
		}
	}
	c.deleteIfSame(e)
	c.mu.Unlock()
}

// Close closes the cache: afterwards Get and Acquire return [ErrClosed],
// pending builds are cancelled (their callers receive ErrClosed), idle
// values are closed now and leased ones at their release, and the janitor
// stops. Close returns the errors of the closes it made, joined. It is
// idempotent: later and concurrent calls wait for the first and return its
// error.
func (c *Cache[K, V]) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

// close does the work of Close, once.
func (c *Cache[K, V]) close() error {
	c.mu.Lock()
	c.closed.Store(true) // under c.mu: finish checks it there before caching a value
	c.cancel()
	if c.janitorOff != nil {
		close(c.janitorOff)
	}
	removed := make([]removal[K, V], 0, len(c.order))
	for len(c.order) > 0 {
		e := c.order[0]
		removed = append(removed, removal[K, V]{e, EvictClosed, c.removeLocked(e, EvictClosed)})
	}
	if c.errs != nil {
		c.errs.Purge() // calls deleteIfSame for each
	}
	c.mu.Unlock()

	var errs []error
	for _, r := range removed {
		c.notifyRemoved(r.e, r.reason, false)
	}
	for _, r := range removed {
		if r.closeNow {
			if err := c.closeValue(r.e.key, r.e.val); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.inflight.Load() == 0 {
		c.drainOnce.Do(func() { close(c.drained) })
	}
	return errors.Join(errs...)
}

// Shutdown closes the cache like Close, then waits until every value built
// has been closed (leased values are closed when their leases are released)
// and every goroutine the cache started has exited, or until ctx ends. It
// returns the close errors joined (including those of values closed after
// Close returned), or ctx's error if ctx ended first.
func (c *Cache[K, V]) Shutdown(ctx context.Context) error {
	err := c.Close()
	select {
	case <-c.drained:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lateErrs) > 0 {
		return errors.Join(append([]error{err}, c.lateErrs...)...)
	}
	return err
}

func (c *Cache[K, V]) debug(msg string, key K) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: "+msg, slog.String("key", c.opts.KeyString(key)))
	}
}

func (c *Cache[K, V]) warn(msg string, key K, err error) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelWarn, "rescache: "+msg, slog.String("key", c.opts.KeyString(key)), slog.Any("error", err))
	}
}
