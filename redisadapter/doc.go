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
// # Get or Acquire
//
// A client from [rescache.Cache.Get] may be closed by an eviction while a
// command on it is in flight; the command then fails with [redis.ErrClosed].
// That is fine for short commands whose caller retries. Use
// [rescache.Cache.Acquire] for blocking commands (BLPOP, XREAD), pipelines,
// transactions and Pub/Sub: while the lease is held the client stays open
// even if its tenant is evicted, and it is closed when the last lease is
// released.
//
// # Servers that go away
//
// A go-redis client reconnects by itself: after a server restart the cached
// client serves again without being rebuilt. A client whose server is gone
// for good (the tenant moved) should leave the cache: set
// [Options.HealthCheck] to have the cache PING idle clients and evict those
// that do not answer, or call [rescache.Cache.Invalidate] when a command
// fails in a way that means the tenant's configuration changed.
package redisadapter
