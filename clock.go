package rescache

import (
	"math"
	"time"
)

// The coarse clock: c.now, nanoseconds since c.epoch, advanced to the system
// clock every tick by the janitor (which runs no user code, so no hook can
// stop it) and by the slow path. The hit path reads c.now instead of the
// system clock, except near a deadline (see expiry).

// expiryWindow is how many ticks before its deadline an entry is checked
// against the system clock instead of the coarse clock, and minExpiryWindow
// the least time: the coarse clock lags the system clock by up to a tick
// while the janitor keeps to its tick, and by the janitor's scheduling delay
// when the CPUs are starved. The window is the lag the hit path tolerates
// without serving an expired value; only entries this close to a deadline
// pay for a read of the system clock.
const (
	expiryWindow    = 4
	minExpiryWindow = 250 * time.Millisecond
)

// clock returns the coarse clock.
func (c *Cache[K, V]) clock() int64 { return c.now.Load() }

// advance moves the clock to the system clock (it never goes back) and
// returns it. It returns 0 when the cache has no clock.
func (c *Cache[K, V]) advance() int64 {
	if c.tick == 0 {
		return 0
	}
	t := int64(time.Since(c.epoch))
	for {
		cur := c.now.Load()
		if cur >= t {
			return cur
		}
		if c.now.CompareAndSwap(cur, t) {
			return t
		}
	}
}

// use checks that the found entry e (whose word is w) has not expired, and
// records a use of it. It is on the hit path: no lock, and no system clock
// unless e is within the window of its deadline.
func (c *Cache[K, V]) use(e *entry[K, V], w uint64) bool {
	if c.tick == 0 {
		return true
	}
	now := c.now.Load()
	if _, expired := c.expiry(e, w, now); expired {
		return false
	}
	stampUse(e, now)
	if c.refreshAfter > 0 {
		c.maybeRefresh(e, now)
	}
	return true
}

// touch records a use of e.
func (c *Cache[K, V]) touch(e *entry[K, V]) {
	if c.tick != 0 {
		stampUse(e, c.now.Load())
	}
}

// stampUse moves e's last-use stamp forward to now; it never moves it back,
// even when two callers that read different clocks race (a plain store
// could, and then the entry would idle out early). The common case, a stamp
// already at now, is one load.
func stampUse[K comparable, V any](e *entry[K, V], now int64) {
	for {
		u := e.used.Load()
		if u >= now || e.used.CompareAndSwap(u, now) {
			return
		}
	}
}

// fresh reports whether the found entry e has not expired.
func (c *Cache[K, V]) fresh(e *entry[K, V], w uint64) bool {
	if c.tick == 0 {
		return true
	}
	_, expired := c.expiry(e, w, c.now.Load())
	return !expired
}

// expiry reports whether the found entry e (whose word is w) has expired,
// and why. now is the coarse clock: farther than c.window from the deadline
// it decides alone; within the window, the system clock decides, so an
// entry is never served after its deadline unless the clock lags by more
// than the window. The used stamp may be up to a tick older than the use it
// records (more when the janitor runs late), so an idle entry may expire
// that much early. A leased entry is not idle; the cache's own holds
// (health checks) do not count.
func (c *Cache[K, V]) expiry(e *entry[K, V], w uint64, now int64) (EvictReason, bool) {
	life, idle := int64(math.MaxInt64), int64(math.MaxInt64)
	if c.lifetime > 0 {
		life = e.life.deadline
	}
	if c.idle > 0 && w&leaseMask == 0 {
		idle = satAdd(e.used.Load(), c.idle)
	}
	if min(life, idle)-now > c.window {
		return 0, false
	}
	if idle < life && c.leases.Held(e, e.hash) {
		// Leased in a slot of c.leases, which the word does not count
		// (entry.go): not idle either. Asked only this close to the
		// deadline, so the hit path does not read the slots.
		idle = math.MaxInt64
		if life-now > c.window {
			return 0, false
		}
	}
	t := c.advance()
	switch {
	case t >= life:
		return EvictLifetime, true
	case t >= idle:
		return EvictIdle, true
	}
	return 0, false
}

// satAdd returns a+b for b >= 0, saturating at math.MaxInt64, so that a
// duration option at its type's limit means "never" instead of wrapping
// into the past.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
