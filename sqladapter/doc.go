// Package sqladapter keeps one *sql.DB connection pool per tenant in a
// [rescache.Cache]: the pool of a tenant is opened on its first request,
// pinged, shared by every later request, and closed when the cache evicts
// it.
//
//	tenants, err := sqladapter.New(sqladapter.Options[string]{
//		Driver: "pgx",
//		DSN: func(ctx context.Context, tenant string) (string, error) {
//			return "postgres://app@db:5432/" + tenant, nil
//		},
//		MaxTotalConns: 80, // all pools together, below the server's limit
//		Cache:         rescache.Options[string, *sql.DB]{MaxEntries: 500, IdleTimeout: 15 * time.Minute},
//	})
//	...
//	l, err := tenants.Lease(ctx, tenant)
//	if err != nil { ... }
//	defer l.Release()
//	rows, err := l.Value().QueryContext(ctx, "SELECT ...")
//
// # Building a pool
//
// [New] returns a cache whose build function opens the tenant's pool with
// [sql.Open] (Driver and DSN) or [sql.OpenDB] (Connector), applies the
// tenant's [PoolSettings], pings the pool within [Options.PingTimeout] (sql.Open
// itself does not connect), and runs [Options.Init] if set. If any step
// fails, the pool is closed and nothing is cached for the tenant: the next
// request tries again, unless the cache's ErrorTTL says otherwise. The error
// is an [*Error] that names the tenant, the step and the cause, with any
// password of the tenant's DSN removed from its text (see [RedactDSN]).
// A step that panics (Options.Pool, DSN, Connector or Init, or the driver
// while the pool opens or pings) is handled alike: the pool is closed, and
// the error is an [*Error] whose cause wraps the [*rescache.PanicError]
// (errors.As finds it), the panic value masked like the rest of the text;
// like every panic, it is not remembered under ErrorTTL.
//
// # Default pool settings
//
// Each cached tenant holds its own pool, so every per-pool figure is
// multiplied by the number of cached tenants. database/sql's own defaults
// (unlimited open connections, 2 idle connections kept forever) suit one
// pool per process, not hundreds. [DefaultPoolSettings] are:
//
//   - MaxOpenConns 10: one tenant can run ten queries at once, enough for
//     the request concurrency of a typical tenant, while a burst from one
//     tenant cannot take a server's whole connection budget (PostgreSQL
//     allows 100 connections by default, MySQL and MariaDB 151). The
//     worst case for a cache is MaxEntries x MaxOpenConns connections: size
//     MaxEntries with that product in mind.
//   - MaxIdleConns 2: a tenant with a couple of requests in flight reuses
//     connections instead of dialling each time, and a quiet tenant keeps
//     at most two sockets open.
//   - ConnMaxIdleTime 5m: a tenant that stays cached but goes quiet gives
//     its idle connections back within five minutes, so idle sockets track
//     the tenants active in the last five minutes, not the tenants cached.
//     It is also below the idle timeouts of common load balancers and NAT
//     gateways (often 350s to 15m), which otherwise cut idle connections
//     silently.
//   - ConnMaxLifetime 30m: connections are replaced every half hour, so a
//     failover, a DNS change or a new replica behind a proxy is picked up,
//     and a server's per-connection memory does not grow for ever.
//
// A tenant that needs more (or less) gets its own figures from
// [Options.Pool]: a large tenant 50 connections, a trial tenant 2.
//
// # Spreading queries over replicas: the connection pick
//
// database/sql hands a query the idle connection returned last. Behind a
// TCP load balancer or DNS round robin over read replicas, the few
// connections a steady load needs then serve nearly every query, and they
// sit on whichever replicas they happened to reach: some replicas get far
// more queries than others, some none (golang/go#68539). Set
// [PoolSettings.Pick] to [LeastRecentlyUsed] to hand out the idle
// connection returned longest ago instead, so that every idle connection
// of the tenant's pool, and so every replica they reach, serves in turn.
// Choose it behind a load balancer or DNS round robin over replicas, or
// whenever the work should spread over every open connection.
//
// Its limit: it spreads over the connections the pool keeps, not over the
// replicas. Keep enough idle connections (MaxIdleConns at least a few per
// replica, and MaxOpenConns to match: the default of 2 idle connections
// reach at most two replicas), and let ConnMaxLifetime move connections
// between replicas when the balancer's set changes.
//
// Under LeastRecentlyUsed the pool keeps its idle connections itself, in a
// FIFO queue in the connector that sqladapter wraps around the driver's
// (database/sql's own pool keeps none), and everything database/sql does
// for its idle connections stays true: MaxIdleConns bounds the queue,
// ConnMaxIdleTime and ConnMaxLifetime close idle connections (a timer, as
// database/sql's cleaner), each connection's lifetime is drawn once, when
// it opens, in (0.9, 1] x ConnMaxLifetime, so that connections opened
// together in a burst do not close together; a connection's session is
// reset (driver.SessionResetter) each time it is reused and a connection
// whose reset fails with driver.ErrBadConn is closed; one that
// driver.Validator rejects when it is put back is closed; a query that
// gets driver.ErrBadConn is retried on idle connections twice, then on a
// new one; Close of the pool closes every idle connection; MaxOpenConns
// bounds the connections open, in use and idle. When every connection is
// in use and queries wait, database/sql hands a connection put back
// straight to a waiting query, as it always does. With
// [Options.MaxTotalConns], an idle connection of the queue holds its place
// in the budget, and the budget's reclaim closes the idle connections of
// these queues too (the least recently used tenant first). The pool's
// connections are wrapped (sql.Conn.Raw gets a wrapper whose Unwrap()
// driver.Conn method returns the driver's own); do not call the pool's
// SetMaxIdleConns, SetConnMaxLifetime or SetConnMaxIdleTime, which would
// give database/sql idle connections of its own.
//
// Which [sql.DBStats] fields change meaning: the pool's own db.Stats()
// reports Idle 0, OpenConnections without the idle connections of the
// queue, every connection put back in MaxIdleClosed, and MaxIdleTimeClosed
// and MaxLifetimeClosed 0. [PoolStats] corrects all five: OpenConnections
// and Idle count the queue, and the three counters count the connections
// the queue closed for each limit. The other fields (InUse, WaitCount,
// WaitDuration, MaxOpenConnections) keep their meaning.
//
// # Leases
//
// The value from [rescache.Cache.Get] is closed when its tenant is evicted,
// even while a query runs on it, which then fails with "sql: database is
// closed". A request that runs queries should take a lease with
// [rescache.Cache.Lease] and defer its Release: an evicted pool is then
// closed only after its last lease is released.
//
// A request whose query fails with a connection error (driver.ErrBadConn,
// a network error, the server ending the session) can call the lease's
// Discard instead: the pool leaves the cache at once, unless it was
// replaced already, with reason [rescache.EvictDiscarded], and is closed
// at its last release, so the next request opens a fresh pool.
// database/sql already replaces single bad connections; Discard is for a
// pool that is broken as a whole. The tenantserver example shows a
// classification of connection errors.
//
// # Health checks
//
// With [Options.HealthCheck] set, the cache pings each idle tenant pool
// every Cache.HealthCheckInterval (default 30s) and evicts the pools whose
// ping fails, for example after a database server restarted. The next
// request for such a tenant opens a fresh pool.
//
// # Connection budget
//
// MaxEntries bounds pools, not connections: a cache of 100 pools of 10
// connections each can open 1,000, and pools evicted while leased keep
// theirs until their last lease is released. [Options.MaxTotalConns] bounds
// the total: the connections that all pools of the cache hold open at
// once, draining pools included, never exceed it.
//
// The budget is a [github.com/rescache/rescache/budget.Budget]: for
// MaxTotalConns, a budget.Local, a FIFO semaphore
// (golang.org/x/sync/semaphore) with one place per connection; with
// [Options.Budget], any implementation, such as the fleet budget of package
// github.com/rescache/rescache/budget/redisbudget, shared by every process
// of a fleet. Each pool is opened over a driver.Connector that
// wraps the driver's: its Connect takes a place before it connects (and
// gives it back if the connect fails), and the connection it returns gives
// the place back once, 10ms after database/sql closes it, whatever the
// reason: idle or lifetime limits, a bad connection, a pool closed after
// eviction, or Close. The 10ms let the server end the session, so that the
// server itself never counts more connections than the budget. The wrapped connection implements every optional interface
// database/sql looks for, answering as database/sql does when the driver's
// connection lacks one, and leaves statements, transactions and rows
// unwrapped.
//
// When the budget is full, a connection that is needed:
//
//  1. takes idle connections back from the least recently used tenant that
//     has any (through the reclaimer the cache registers with the budget): that pool's idle connections are closed
//     (SetMaxIdleConns(0), then its setting again) and their places go, in
//     order, to those waiting;
//  2. then waits, first come first served, for a connection to be
//     closed. While anyone waits, a connection put back in any pool is
//     closed instead of kept idle (its driver.Validator answers false), so
//     its place goes to the first waiter at once: a tenant that holds no
//     connection does not starve while others keep idle ones;
//  3. gives up when the context of the query ends (for a build, its ping's
//     PingTimeout): the query fails with an error that matches
//     [ErrBudgetWait] and the context's error.
//
// Set the budget below what the server allows the application, and see
// [Options.MaxTotalConns] for the deadlock of a request that needs two
// connections at once. [PoolBudget] reports the budget's figures.
//
// # Statistics
//
// [PoolStats] reports [sql.DBStats] of every open tenant pool, and
// [PoolBudget] the figures of the connection budget.
//
// The package imports only the standard library, rescache and
// rescache/budget: the program imports the database/sql drivers it needs.
package sqladapter
