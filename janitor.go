package rescache

import (
	"context"
	"sync"
	"time"
)

// janitor is the cache's background goroutine, started by New when an
// option needs it. Every tick it advances the clock, evicts expired entries
// and forgets expired errors; every HealthCheckInterval it starts a round of
// health checks in a goroutine of its own. It never runs user code, so that
// no hook can stop the clock: the OnEvicts and closes of the entries it
// removes go to the hook runner. It exits when Close closes c.janitorOff,
// and holds one count of c.inflight until then.
func (c *Cache[K, V]) janitor() {
	defer c.inflightDone()
	t := time.NewTicker(time.Duration(c.tick))
	defer t.Stop()
	var nextCheck time.Time
	if c.opts.HealthCheck != nil {
		nextCheck = time.Now().Add(c.opts.HealthCheckInterval)
	}
	checking := false
	checked := make(chan struct{}, 1)
	for {
		select {
		case <-c.janitorOff:
			return
		case <-checked:
			checking = false
		case <-t.C:
			now := c.advance()
			c.sweep(now)
			if c.opts.LeakThreshold > 0 {
				c.checkLeaks()
			}
			if !nextCheck.IsZero() && !checking && !time.Now().Before(nextCheck) {
				nextCheck = time.Now().Add(c.opts.HealthCheckInterval)
				checking = true
				c.inflight.Add(1)
				go func() {
					defer c.inflightDone()
					c.healthRound()
					checked <- struct{}{}
				}()
			}
		}
	}
}

// healthRound checks the found entries that are neither leased nor used
// within the last HealthCheckInterval, and evicts the unhealthy ones. A
// check is a call to a backend like a build, so with MaxConcurrentBuilds it
// takes a build slot, and only a free one: checks never queue for slots,
// so they never delay a waiting build by more than one check, and builds
// and checks together never exceed MaxConcurrentBuilds. An entry whose check
// found no free slot is checked at a later round. Each check holds the
// entry (a hold, not a lease: it never changes what callers see), so the
// value is not closed under it, and runs outside every lock. Rounds never
// overlap (the janitor starts one only after the last has returned, and a
// round returns after all its checks), and an entry sits in one heap, so no
// entry is checked twice at once.
func (c *Cache[K, V]) healthRound() {
	now := c.clock()
	interval := int64(c.opts.HealthCheckInterval)
	c.mu.Lock()
	var due []*entry[K, V]
	for _, h := range c.unparkedLocked() {
		for _, e := range *h {
			if e.word.Load()&leaseMask == 0 && now-e.used.Load() >= interval-c.tick && !c.leases.Held(e, e.hash) && e.tryHold() {
				due = append(due, e)
			}
		}
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	for i, e := range due {
		if c.closed.Load() || !c.tryAcquireSlot() {
			c.skipChecks(due[i:])
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.releaseSlot()
			c.check(e)
		}()
		if c.slots == nil && i%64 == 63 {
			wg.Wait() // without a slot bound, at most 64 checks at a time
		}
	}
	wg.Wait()
}

// skipChecks drops the holds of entries whose check did not start.
func (c *Cache[K, V]) skipChecks(es []*entry[K, V]) {
	for _, e := range es {
		if e.unhold() {
			c.closeEntry(e)
		}
	}
}

// check runs one health check of e, which holds a hold that check drops.
func (c *Cache[K, V]) check(e *entry[K, V]) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.HealthCheckTimeout)
	err := c.callHealthCheck(ctx, e)
	cancel()
	c.ctr.healthChecks.Add(1)
	if err != nil && !c.closed.Load() {
		c.ctr.healthCheckErrors.Add(1)
		c.warn("health check failed", e.key, err)
		c.evict(e, EvictUnhealthy)
	}
	if e.unhold() {
		c.closeEntry(e)
	}
}

func (c *Cache[K, V]) callHealthCheck(ctx context.Context, e *entry[K, V]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = c.recovered("HealthCheck", e.key, r)
		}
	}()
	return c.opts.HealthCheck(ctx, e.key, e.val)
}
