package rescache

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/rescache/rescache/internal/percpu"
)

// ErrClosed is returned by Get, Lease, Acquire and Refresh once Close or
// Shutdown has been called, and to callers waiting for a build that Close
// cancelled. Match it with errors.Is.
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
// Shutdown, when done with it: that stops its goroutines and closes every
// value it holds.
type Cache[K comparable, V any] struct {
	build func(ctx context.Context, key K) (V, error)
	opts  Options[K, V] // a copy with defaults; read-only after New
	log   *slog.Logger  // opts.Logger; nil means no logging

	m *table[K, V] // pending, found and remembered-failed entries

	// The clock, when the cache needs one (tick > 0): now is nanoseconds
	// since epoch, set from the system clock by the janitor every tick and
	// by the slow path (builds, expiry near a deadline), and read by the hit
	// path instead of the system clock. It never goes back.
	epoch time.Time
	now   atomic.Int64
	tick  int64 // clock resolution in nanoseconds; 0 = no clock
	// window is how far from its deadline an entry is judged by the coarse
	// clock alone; closer than that, the system clock decides (see expiry).
	window int64

	idle, lifetime, errorTTL int64         // Options durations in nanoseconds
	refreshAfter, jitter     int64         // Options.RefreshAfter and LifetimeJitter in nanoseconds
	refreshSeq               atomic.Uint64 // tickets of builds (every new entry) and Refresh calls, in order

	hot    pcounter        // hits, and leases taken and released
	ctr    counters        // everything else
	tokens tokenPool[K, V] // lease tokens, reused after their release

	// leases counts the leases that Lease's hit path takes, per P, while
	// their entry lives (percpu.Counts; see entry.go): without leak
	// tracking only, since a tracked lease is counted in its entry's word.
	// Without slots (leak tracking), every lease is counted in the word.
	leases percpu.Counts[entry[K, V]]

	slots chan struct{} // one token per build running; nil = unbounded
	room  room          // the units of MaxEntries' bound on values open (evict.go)

	ctx    context.Context // parent of every build's context; ends at Close
	cancel context.CancelFunc
	closed atomic.Bool

	// inflight counts what Shutdown waits for: builds, the janitor, health
	// checks and the hook runner, and built values not yet closed. drained
	// is closed once, when it is zero after Close.
	inflight  atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	// closeOnce runs close; closeErr is written inside it and read after
	// Do returns, so every Close, concurrent or later, returns the first
	// one's result.
	closeOnce sync.Once
	closeErr  error

	hooks hookRunner[K, V] // runs OnEvict and Close off the callers' and the janitor's goroutines

	leakMu sync.Mutex                    // protects leaks and the tracks' reported
	leaks  map[*leakTrack[K, V]]struct{} // leases taken and not released, with LeakThreshold

	mu         sync.Mutex                      // protects the fields below, and the entries' place, nodeUsed, life.idx and refresh state's fails
	parked     recency[K, V]                   // found entries leased past their idle deadline, by last use
	byAge      byDeadline[K, V]                // found entries by deadline (MaxLifetime), soonest first
	errs       *simplelru.LRU[K, *entry[K, V]] // failed entries remembered by ErrorTTL, oldest failure first
	lateErrs   []error                         // Close errors of values closed after Close returned
	leasedGone map[*entry[K, V]]struct{}       // entries removed while leased, until their value is closed
	janitorOff chan struct{}                   // closed by Close to stop the janitor; nil when there is none

	// policy is the eviction policy (policy.go): lruPolicy, or tinyLFU
	// with Policy TinyLFU and MaxEntries. Guarded by mu.
	policy policy[K, V]
	// reads is TinyLFU's read buffer, the one part of the policy that the
	// hit path touches (with its own synchronisation); nil with LRU.
	reads *readBuffer[K, V]
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
		build:        build,
		opts:         o,
		log:          o.Logger,
		m:            newTable[K, V](),
		epoch:        time.Now(),
		idle:         int64(o.IdleTimeout),
		lifetime:     int64(o.MaxLifetime),
		errorTTL:     int64(o.ErrorTTL),
		refreshAfter: int64(o.RefreshAfter),
		jitter:       int64(o.LifetimeJitter),
		hot:          newPcounter(),
		drained:      make(chan struct{}),
		leaks:        make(map[*leakTrack[K, V]]struct{}),
	}
	c.hooks.c = c
	c.tokens.init()
	if o.LeakThreshold == 0 {
		c.leases.Init()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if o.Policy == TinyLFU && o.MaxEntries > 0 {
		p := newTinyLFU[K, V](o.MaxEntries, int64(o.IdleTimeout))
		c.policy, c.reads = p, &p.reads
	} else {
		c.policy = &lruPolicy[K, V]{}
	}
	if o.MaxEntries > 0 {
		c.room.max = o.MaxEntries + max(o.MaxConcurrentBuilds, closeBacklog)
	}
	if o.MaxConcurrentBuilds > 0 {
		c.slots = make(chan struct{}, o.MaxConcurrentBuilds)
	}
	if o.ErrorTTL > 0 {
		// The onEvict callback runs inside errs.Add, under c.mu: it only
		// drops the forgotten entry from the map.
		c.errs, _ = simplelru.NewLRU(o.MaxErrorEntries, func(_ K, e *entry[K, V]) { c.deleteIfSame(e) })
	}
	if needsJanitor(&o) {
		c.tick = int64(o.ClockResolution)
		c.window = max(expiryWindow*c.tick, int64(minExpiryWindow))
		c.janitorOff = make(chan struct{})
		c.inflight.Add(1)
		go c.janitor()
	}
	return c, nil
}

func needsJanitor[K comparable, V any](o *Options[K, V]) bool {
	return o.MaxEntries > 0 || o.IdleTimeout > 0 || o.MaxLifetime > 0 || o.ErrorTTL > 0 || o.HealthCheck != nil || o.LeakThreshold > 0 || o.RefreshAfter > 0
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
// [ErrClosed]. Get never returns the value of a build that Invalidate
// detached while it was pending: it waits for, or starts, the next build.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	if e, ok := c.m.Load(key); ok {
		if w := e.word.Load(); found(w) && c.use(e, w) {
			if c.reads != nil {
				if r := countHit(&c.hot, c.reads, e, 0); r >= 0 && c.reads.evicting.Load() {
					c.drainReads(r)
				}
			} else {
				c.hot.add(1, 0, 0)
			}
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

// All returns an iterator over the found entries, with the semantics of
// [Cache.Range]: no order, no lease, not a use.
func (c *Cache[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { c.Range(yield) }
}

// Invalidate removes key's entry now and reports whether there was one. A
// found value is closed once no lease holds it (at once if none does),
// after its OnEvict. For a pending key, the Acquire callers already waiting
// receive that build's result, Get callers wait for a fresh build, new
// callers start one, and the old build's value is never cached and is
// closed once unleased. A remembered build error (ErrorTTL) is forgotten.
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
	case w&valuedBit != 0 && e.idx() >= 0:
		r := c.removeLocked(e, EvictInvalidated)
		c.mu.Unlock()
		c.afterRemove(r)
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
	hits, leased := c.hot.load()
	s := c.ctr.snapshot(uint64(hits))
	s.Leased = int(leased)
	return s
}

// deleteIfSame removes e from the map if it is still its key's entry.
func (c *Cache[K, V]) deleteIfSame(e *entry[K, V]) { c.m.deleteIfSame(e) }

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

func (c *Cache[K, V]) debug(msg string, key K) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: "+msg, slog.String("key", c.opts.KeyString(key)))
	}
}

func (c *Cache[K, V]) warn(msg string, key K, err error) {
	if c.log == nil {
		return
	}
	attrs := []slog.Attr{slog.String("key", c.opts.KeyString(key)), slog.Any("error", err)}
	if pe := (*PanicError)(nil); errors.As(err, &pe) {
		attrs = append(attrs, slog.String("stack", string(pe.Stack)))
	}
	c.log.LogAttrs(context.Background(), slog.LevelWarn, "rescache: "+msg, attrs...)
}

// keyString formats key for errors and logs.
func (c *Cache[K, V]) keyString(key K) string { return c.opts.KeyString(key) }
