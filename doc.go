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
// Values leave the cache by LRU bound ([Options.MaxEntries]), idle timeout
// ([Options.IdleTimeout]), maximum lifetime ([Options.MaxLifetime]), failed
// health checks ([Options.HealthCheck]), [Cache.Invalidate] and
// [Cache.Close]. Every value build returned is closed exactly once, by the
// Closer hook ([Options.Close], by default the value's Close method), and
// never while a lease taken with [Cache.Acquire] holds it.
//
// # Get or Acquire
//
// [Cache.Get] takes no lease: the value it returns may be closed by an
// eviction while the caller still uses it. That is fine for values whose
// use after Close fails cleanly and rarely (a query on a closed *sql.DB
// returns an error), and it is the fastest path. Use [Cache.Acquire] when a
// value must stay open for the span of its use (a transaction, a stream, a
// blocking command): the entry may still be evicted, so the next caller
// builds a fresh value, but the leased value is closed only at its last
// release.
//
// # Time
//
// Expiry is checked on every read, so an expired entry is never returned,
// and a single janitor goroutine per cache removes expired entries in the
// background. The hit path reads a coarse clock kept by the janitor
// ([Options.ClockResolution]) instead of the system clock.
//
// The sub-modules sqladapter and redisadapter build on Cache for
// database/sql pools and go-redis clients; promcollector exports [Stats] to
// Prometheus.
package rescache
