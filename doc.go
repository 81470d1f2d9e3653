// Package rescache lazily opens, shares, bounds and closes one expensive
// resource per key: a *sql.DB pool per tenant, a Redis client per tenant, a
// gRPC connection per backend.
//
// A [Cache] builds a key's value on first use with the build function given
// to [New]. Callers that arrive while the build runs wait for it and get the
// same value or the same error; builds of different keys run at the same
// time; no lock is held while user code runs. Found values are served
// without a lock and without allocating.
//
// Values leave the cache by size bound ([Options.MaxEntries], least
// recently used first, or by frequency with [Options.Policy] [TinyLFU]),
// idle timeout ([Options.IdleTimeout]), maximum lifetime
// ([Options.MaxLifetime]), failed health checks ([Options.HealthCheck]),
// [Cache.Invalidate] and [Cache.Close]. Every value build returned is closed exactly once, by the
// Closer hook ([Options.Close], by default the value's Close method), and
// never while a lease taken with [Cache.Lease] (or [Cache.Acquire]) holds
// it. [Cache.Refresh] and [Options.RefreshAfter] replace a value without
// making callers wait: the new value is swapped in when its build succeeds,
// and the old one closes at its last release.
//
// # Get or Lease
//
// [Cache.Get] takes no lease: the value it returns may be closed by an
// eviction while the caller still uses it. That is fine for values whose
// use after Close fails cleanly and rarely (a query on a closed *sql.DB
// returns an error), and it is the fastest path. Use [Cache.Lease] when a
// value must stay open for the span of its use (a transaction, a stream, a
// blocking command), and defer the lease's [Lease.Release]: the entry may
// still be evicted, so the next caller builds a fresh value, but the leased
// value is closed only at its last release. A lease of a found key costs
// no allocation.
//
//	l, err := c.Lease(ctx, tenant)
//	if err != nil {
//		return err
//	}
//	defer l.Release() // does nothing after Discard
//	if err := use(l.Value()); isBroken(err) {
//		l.Discard()
//	}
//
// A caller that finds the leased value broken (a connection the server
// closed) calls [Lease.Discard] instead of Release: the entry leaves the
// cache if it still holds that very value, never a newer build of the key,
// with reason [EvictDiscarded], and the value is closed at its last
// release, once the other holders are done with it; the next call builds a
// fresh value. [Cache.Acquire] takes the same lease and returns its
// Release as a func, at the cost of one allocation.
//
// # Goroutines and hooks
//
// A cache starts these kinds of goroutine, each with an owner and a way to
// exit: the janitor, which keeps the coarse clock and removes expired
// entries (it runs no user code; it exits at Close); the hook goroutine,
// which runs OnEvict and Close for the entries the janitor removes and for
// the entries a build evicts to make room, one at a time (started when work
// arrives, it exits when its queue is empty); one goroutine per build whose
// caller can stop waiting (a ctx with a Done channel, or a BuildTimeout)
// and per refresh build (it exits when the build function returns); and,
// with HealthCheck, one goroutine per health-check round, which runs the
// round's checks (it exits when they are done). No caller ever runs a hook
// of another key. [Cache.Shutdown] waits for all of them.
//
// # Time
//
// Expiry is checked on every read, so an expired entry is not returned,
// and the janitor removes expired entries in the background. The hit path
// reads the coarse clock ([Options.ClockResolution]) instead of the system
// clock, except within max(4 ticks, 250ms) of an entry's deadline, where it
// reads the system clock. The coarse clock lags by at most a tick while the
// janitor keeps to its tick, so expiry is exact; when the CPUs are starved
// and the janitor is not scheduled for longer than that window, a value can
// be served late by the janitor's delay beyond the window, never more.
//
// # Nested builds
//
// A build may call Get, Lease, Acquire or Refresh of its own cache for
// another key: it must pass its own ctx. While it waits it lends its build
// slot ([Options.MaxConcurrentBuilds]) and takes one back before the call
// returns; a wait for a build running in its own chain of builds (a
// refresh's included) fails at once with [ErrBuildCycle].
//
// The sub-modules sqladapter and redisadapter build on Cache for
// database/sql pools and go-redis clients; promcollector exports [Stats] to
// Prometheus.
package rescache
