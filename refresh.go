package rescache

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
)

// Refresh, after Caffeine's refreshAfterWrite and otter's refresh (serve
// the current value while a new one loads), for resources: the new value
// replaces the old one atomically, and the old value is closed at its last
// release, so work in flight finishes on it.
//
// A refresh is a build of a new pending entry that is not in the map: no
// caller can find or wait for it, so it never changes what callers see
// until the swap. Its call's replaces field names the found entry it is to
// replace, whose refreshing field points to that call while it runs (one
// refresh per entry at a time). finish swaps it in under Cache.mu (see
// replaceLocked), or drops its value when the old entry left meanwhile.

// refreshState is what a found entry needs for refresh, kept apart from
// the entry (entry.refresh) so that an entry never refreshed does not pay
// for it: with RefreshAfter every entry has one from its build; without
// it, the first Refresh of the entry installs one.
type refreshState struct {
	// at is the clock stamp from which a use of the found entry starts
	// an automatic refresh (RefreshAfter less the jitter, pushed back by a
	// backoff after a failed refresh); math.MaxInt64 when off.
	at atomic.Int64

	// running is the call of the refresh in flight for the entry, nil when
	// none. Set by startRefresh (CAS from nil), cleared when that refresh
	// is done; the call itself stays readable by its waiters after that.
	running atomic.Pointer[call]

	fails int32 // consecutive failed refreshes, for the backoff; guarded by Cache.mu
}

// refreshOf returns e's refresh state, installing one if it has none.
func refreshOf[K comparable, V any](e *entry[K, V]) *refreshState {
	if rs := e.refresh.Load(); rs != nil {
		return rs
	}
	rs := new(refreshState)
	rs.at.Store(math.MaxInt64)
	if e.refresh.CompareAndSwap(nil, rs) {
		return rs
	}
	return e.refresh.Load()
}

// refreshRunning returns the call of e's refresh in flight, or nil.
func refreshRunning[K comparable, V any](e *entry[K, V]) *call {
	if rs := e.refresh.Load(); rs != nil {
		return rs.running.Load()
	}
	return nil
}

// Refresh rebuilds key's value and returns once a value whose build started
// after the call is in the cache, or with that build's error. Meanwhile
// Get, Acquire and Lease keep returning the current value and never wait.
// On success the new value replaces the old one atomically; OnEvict(old,
// [EvictReplaced]) runs on the refresh build's goroutine after the swap (it
// may still run when Refresh returns), and the old value is closed at its
// last release (there too, if it is not leased).
// On failure the old value stays (until MaxLifetime or eviction) and the
// error is returned and counted in [Stats.RefreshErrors].
//
// Refresh of an absent key builds it like Get; of a pending key, it waits
// for that build (which started before the call, so it may have used old
// credentials) and then refreshes its value. Concurrent calls share one
// rebuild when it started after each of them: a call that arrives while a
// rebuild runs waits for it, then starts or joins the next one. A build
// that calls Refresh with its own ctx for a key whose build or refresh
// runs in its own chain gets [ErrBuildCycle] at once. If ctx ends first, Refresh
// returns ctx.Err() and the refresh goes on. Refresh builds count against
// MaxConcurrentBuilds and run under BuildTimeout, like builds. If the entry
// leaves the cache while its refresh runs (Invalidate, eviction), the
// refresh's value is never cached (it is closed once unleased) and Refresh
// builds the key again like Get.
//
// The build function needs no change: a refresh calls it like a first
// build, so it reads whatever it uses (a DSN, a secret) when it runs.
func (c *Cache[K, V]) Refresh(ctx context.Context, key K) error {
	ticket := c.refreshSeq.Add(1)
	missed := false // counted in Stats.Misses once, however often it builds
	cycle := func(cl *call) error {
		if r := runOf[K, V](ctx); r != nil && r.waitsOn(cl) {
			return fmt.Errorf("%w: %s", ErrBuildCycle, c.keyString(key))
		}
		return nil
	}
	for {
		if c.closed.Load() {
			return ErrClosed
		}
		e, ok := c.m.Load(key)
		if !ok {
			ne, cl := c.buildAbsent(ctx, key, false, &missed)
			if cl == nil {
				continue // someone else's build: look again
			}
			if _, err, retry := c.wait(ctx, ne, cl, false); !retry {
				return err
			}
			continue
		}
		w := e.word.Load()
		switch {
		case w&removedBit != 0:
			c.deleteIfSame(e)
			continue
		case w&failedBit != 0:
			c.forget(e) // a refresh builds again, remembered error or not
			continue
		case w&valuedBit == 0: // pending: its build started before this call
			if cl := e.pending.Load(); cl != nil {
				if err := cycle(cl); err != nil {
					return err
				}
				if err := c.waitDone(ctx, cl); err != nil {
					return err
				}
			}
			continue
		}
		if reason, stale := c.expiry(e, w, c.clock()); stale {
			c.evict(e, reason)
			continue
		}
		if e.born > ticket {
			return nil // its build started after this call
		}
		cl := refreshRunning(e)
		if cl == nil {
			cl = c.startRefresh(ctx, e)
		}
		if cl == nil {
			continue // another caller started one meanwhile
		}
		if err := cycle(cl); err != nil {
			return err
		}
		if err := c.waitDone(ctx, cl); err != nil {
			return err
		}
		if cl.seq < ticket {
			continue // started before this call: not an answer
		}
		if cl.err != nil {
			return cl.err
		}
		if !cl.detached {
			return nil
		}
	}
}

// startRefresh starts a refresh of the found entry e, unless one runs, and
// returns its call; nil when another caller won the race. The build runs
// in a goroutine of its own, under the values of ctx.
func (c *Cache[K, V]) startRefresh(ctx context.Context, e *entry[K, V]) *call {
	ne := c.newEntry(e.key)
	cl := ne.pending.Load()
	cl.replaces = e
	cl.seq = ne.born
	if !refreshOf(e).running.CompareAndSwap(nil, cl) {
		return nil
	}
	c.ctr.pending.Add(1)
	c.launch(context.WithoutCancel(ctx), ne, false)
	return cl
}

// maybeRefresh starts an automatic refresh of the found entry e if a use
// finds it past its refresh age (RefreshAfter) and none runs. It is on the
// hit path: the check is a load and a compare; the rest runs once per
// refresh.
func (c *Cache[K, V]) maybeRefresh(e *entry[K, V], now int64) {
	rs := e.refresh.Load() // set at the build, with RefreshAfter
	if now < rs.at.Load() || rs.running.Load() != nil {
		return
	}
	c.startRefresh(context.Background(), e)
}

// finishRefreshLocked is finish's arm for a refresh build e of the found
// entry old, under c.mu, once. A failure (err != nil) keeps the old value;
// nothing is remembered, the map never held e. A success swaps e in for
// old if old is still the key's found entry, and returns old's removal
// (for afterRemove, after the unlock) and cached; otherwise (Invalidate,
// eviction or expiry meanwhile) e's value is never cached, and the caller
// closes it (nobody holds it: it was never in the map). e is found before
// it goes into the map, so no caller ever waits for it.
func (c *Cache[K, V]) finishRefreshLocked(old, e *entry[K, V], cl *call, now int64, err error) (replaced removal[K, V], cached bool) {
	if err == nil {
		e.markFound()
		if replaced, cached = c.replaceLocked(old, e); !cached {
			e.markRemoved()
			cl.detached = true
		}
	}
	c.refreshDoneLocked(old, cl, now, err)
	return replaced, cached
}

// replaceLocked swaps the refreshed entry ne in for old, if old is still
// key's found entry, and returns old's removal (reason EvictReplaced) for
// afterRemove.
func (c *Cache[K, V]) replaceLocked(old, ne *entry[K, V]) (removal[K, V], bool) {
	if old.idx() < 0 || c.closed.Load() {
		return removal[K, V]{}, false
	}
	if !c.m.replaceIfSame(old, ne) {
		return removal[K, V]{}, false
	}
	r := c.removeLocked(old, EvictReplaced) // its deleteIfSame leaves ne in place
	c.insertLocked(ne)
	return r, true
}

// refreshDoneLocked ends the refresh ne (whose call is cl) of old: it
// counts it, and after a
// failure sets the backoff before a use may start the next automatic
// refresh: RefreshAfter/8, doubling with each consecutive failure up to
// RefreshAfter.
func (c *Cache[K, V]) refreshDoneLocked(old *entry[K, V], cl *call, now int64, err error) {
	c.ctr.refreshes.Add(1)
	rs := old.refresh.Load() // installed by startRefresh
	if err != nil {
		c.ctr.refreshErrors.Add(1)
		rs.fails++
		if c.refreshAfter > 0 {
			backoff := max(c.refreshAfter/8, c.tick) << min(rs.fails-1, 3)
			rs.at.Store(satAdd(now, min(backoff, c.refreshAfter)))
		}
	}
	rs.running.CompareAndSwap(cl, nil)
}
