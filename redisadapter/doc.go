// Package redisadapter keeps one go-redis client per tenant in a
// [rescache.Cache]: built lazily on a tenant's first call, shared by every
// caller of that tenant, bounded by the cache's MaxEntries and expiry
// options, and closed when it leaves the cache.
//
// A tenant is whatever the key stands for: its own server, its own database
// number on a shared server, or its own ACL user. The options function maps a
// key to the go-redis options of that tenant's client:
//
//	tenants, err := redisadapter.New(redisadapter.Options[int]{
//		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
//			return &redis.Options{Addr: "127.0.0.1:6379", DB: tenant}, nil
//		},
//		Cache: rescache.Options[int, *redis.Client]{MaxEntries: 64, IdleTimeout: 10 * time.Minute},
//	})
//
// [New] gives a [rescache.Cache] of *redis.Client; [NewUniversal] gives one
// of [redis.UniversalClient] for tenants on a Redis Cluster or behind
// Sentinel. Each build copies the tenant's options (it never modifies them),
// creates the client and sends PING within [Options.PingTimeout]. A build that
// fails closes the client it created and returns a [*BuildError] that names
// the tenant and the cause with passwords redacted; nothing is cached for the
// tenant (unless the cache's ErrorTTL says otherwise).
//
// # Get or Lease
//
// A client from [rescache.Cache.Get] may be closed by an eviction while a
// command on it is in flight; the command then fails with [redis.ErrClosed].
// That is fine for short commands whose caller retries. Use
// [rescache.Cache.Lease], and defer the lease's Release, for blocking
// commands (BLPOP, XREAD), pipelines, transactions and Pub/Sub: while the
// lease is held the client stays open even if its tenant is evicted, and it
// is closed when the last lease is released:
//
//	l, err := tenants.Lease(ctx, tenant)
//	if err != nil { ... }
//	defer l.Release()
//	vals, err := l.Value().BLPop(ctx, 30*time.Second, "jobs").Result()
//
// go-redis replaces a broken connection by itself, so a failed command is
// no reason to drop the client. A caller that knows the client itself is
// wrong (its tenant moved to another server) calls the lease's Discard
// instead of Release: the client leaves the cache with reason
// [rescache.EvictDiscarded], unless a newer one replaced it already, and is
// closed at its last release.
//
// # Servers that go away
//
// A go-redis client reconnects by itself: after a server restart the cached
// client serves again without being rebuilt. A client whose server is gone
// for good (the tenant moved) should leave the cache: set
// [Options.HealthCheck] to have the cache PING idle clients and evict those
// that do not answer, or call [rescache.Cache.Invalidate] when a command
// fails in a way that means the tenant's configuration changed.
//
// # Connection budget
//
// [Options.MaxTotalConns] (and [UniversalOptions.MaxTotalConns]) bounds the
// connections that all clients of a cache hold open at once, as the server
// counts them: every client's pool, Pub/Sub, cluster node and sentinel
// connections, evicted clients still draining included. The budget is a
// [github.com/rescache/rescache/budget.Budget]: for MaxTotalConns a
// budget.Local, a FIFO semaphore (golang.org/x/sync/semaphore) with one
// place per connection; with [Options.Budget] any implementation, such as
// the fleet budget of package
// github.com/rescache/rescache/budget/redisbudget. A place is taken in the
// client's go-redis Dialer (the tenant's own Dialer, or go-redis's, is
// wrapped) and given back once, when the connection is closed and the
// server has closed its side.
//
// A dial that finds the budget full closes idle connections, least
// recently used tenant first, and waits, first come first
// served, looking again for idle connections every 10ms, until a place is
// free or its context ends. go-redis dials in the background under
// DialTimeout; a command whose context ends while its client's dial waits
// fails with an error that matches [ErrBudgetWait] and the context's error.
// A connection counts as idle once its last reply was read over 50ms ago
// with nothing under way on it; go-redis finds a reclaimed connection
// closed when it next takes it from its pool, drops it and retries the
// command on a new connection, before sending anything on the old one.
// [PoolBudget] reports the budget's figures.
//
// # Rotation across instances
//
// [Announce] publishes "refresh:<key>" or "invalidate:<key>" on a Pub/Sub
// channel; [Follow], run on every instance, applies them to a cache of any
// kind ([rescache.Cache.Refresh] or [rescache.Cache.Invalidate]), and
// refreshes every cached entry after go-redis subscribes again, since
// Pub/Sub drops the messages sent while a subscriber is disconnected.
package redisadapter
