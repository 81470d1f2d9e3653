// Package pgxadapter caches one pgxpool.Pool per tenant with rescache: each
// tenant's pool is opened on first use, shared by every caller, pinged
// before it is cached, bounded together with the others by one connection
// budget, and closed when it leaves the cache, after its last lease.
//
// It is sqladapter for programs that use pgx directly: the same build
// steps, the same budget (Options.MaxTotalConns, or any budget.Budget such
// as budget/redisbudget's fleet budget), the same redacted errors.
//
//	tenants, err := pgxadapter.New(pgxadapter.Options[string]{
//		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
//			return pgxpool.ParseConfig(dsnOf(tenant))
//		},
//		MaxTotalConns: 80,
//		Cache:         rescache.Options[string, *pgxpool.Pool]{MaxEntries: 500, IdleTimeout: 10 * time.Minute},
//	})
//	...
//	l, err := tenants.Lease(ctx, tenant)
//	if err != nil { ... }
//	defer l.Release()
//	rows, err := l.Value().Query(ctx, "SELECT ...")
//
// # Closing
//
// A pool that leaves the cache (eviction, expiry, Invalidate, Close) is
// closed once its last rescache lease is released. pgxpool.Pool.Close then
// waits until every connection acquired from the pool is released: a
// caller that took a pool with Get (no lease) and holds one of its
// connections delays that close, on the cache's hook goroutine or on the
// caller that removed it. Use Lease around the work on a pool.
//
// # The budget
//
// Connections are counted where the server sees them: around
// ConnConfig.DialFunc (the caller's own DialFunc, or pgconn's default,
// still dials), from the dial until 10ms after the socket is closed (the
// server ends the session a moment after), so a place is held while the
// server counts the connection. While a place is awaited
// (budget.Budget.Contended), a connection released to its pool is closed
// instead of kept idle (through AfterRelease, after the caller's own), and
// the budget's reclaimer closes idle connections of the least recently
// used tenant's pool.
package pgxadapter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/budget"
)

// Options configures New.
type Options[K comparable] struct {
	// Config returns the pool configuration of the tenant key: parse its
	// connection string (pgxpool.ParseConfig) and set what you want. The
	// adapter adds its hooks to it without dropping yours (BeforeConnect,
	// AfterConnect, BeforeAcquire / PrepareConn, AfterRelease, BeforeClose
	// and ConnConfig.DialFunc are kept and called). It is called for every
	// build, so it reads whatever it uses (a DSN, a secret) when it runs.
	// Required.
	Config func(ctx context.Context, key K) (*pgxpool.Config, error)

	// PingTimeout bounds the ping that a new pool must answer before it
	// is cached.
	//
	// default: 0, meaning 5s.
	PingTimeout time.Duration

	// HealthCheck, when true and Cache.HealthCheck is nil, checks idle
	// pools with Ping every Cache.HealthCheckInterval: a pool that fails
	// leaves the cache.
	HealthCheck bool

	// MaxTotalConns bounds the connections that all the tenants' pools
	// hold open at once (a budget.Local of that size). 0 means no budget.
	// Set it or Budget, not both.
	MaxTotalConns int

	// Budget is the connection budget that the pools share, with the
	// pools of other caches that use it: budget.NewLocal for one process,
	// or budget/redisbudget's for a fleet. Set it or MaxTotalConns, not
	// both.
	Budget budget.Budget

	// Cache configures the cache itself. Its Close defaults to
	// pool.Close.
	Cache rescache.Options[K, *pgxpool.Pool]
}

// Error is the error of a failed build: it names the tenant, the step that
// failed and the cause. Its text never holds the tenant's password (the
// Config's ConnConfig.Password): where the cause repeats it, the cause is
// replaced by a copy of its text with the password masked, which answers
// errors.Is like the original but not errors.As. A step that panicked has
// a cause that unwraps to a *rescache.PanicError, whose Value is masked the
// same way.
type Error struct {
	// Tenant is the tenant's key, through Options.Cache.KeyString.
	Tenant string
	// Op is the step that failed: "config" (Options.Config), "new"
	// (pgxpool.NewWithConfig) or "ping".
	Op string
	// Err is the cause.
	Err error
}

// Error returns "pgxadapter: tenant <tenant>: <op>: <cause>".
func (e *Error) Error() string {
	return "pgxadapter: tenant " + strconv.Quote(e.Tenant) + ": " + e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns a cache of one *pgxpool.Pool per tenant, as the package doc
// says. It returns an error for invalid options.
func New[K comparable](opts Options[K]) (*rescache.Cache[K, *pgxpool.Pool], error) {
	switch {
	case opts.Config == nil:
		return nil, errors.New("pgxadapter: Options.Config is nil")
	case opts.MaxTotalConns < 0:
		return nil, fmt.Errorf("pgxadapter: Options.MaxTotalConns is %d; want 0 (no budget) or more", opts.MaxTotalConns)
	case opts.MaxTotalConns > 0 && opts.Budget != nil:
		return nil, errors.New("pgxadapter: set Options.MaxTotalConns or Options.Budget, not both")
	case opts.PingTimeout < 0:
		return nil, fmt.Errorf("pgxadapter: Options.PingTimeout is %v; want 0 (5s) or more", opts.PingTimeout)
	}
	a := &adapter[K]{config: opts.Config, pingTimeout: opts.PingTimeout, keyString: opts.Cache.KeyString}
	if a.pingTimeout == 0 {
		a.pingTimeout = 5 * time.Second
	}
	if a.keyString == nil {
		a.keyString = func(k K) string { return fmt.Sprint(k) }
	}
	a.budget = opts.Budget
	if opts.MaxTotalConns > 0 {
		l, err := budget.NewLocal(opts.MaxTotalConns)
		if err != nil {
			return nil, fmt.Errorf("pgxadapter: %w", err)
		}
		a.budget = l
	}
	co := opts.Cache
	if co.Close == nil {
		co.Close = func(_ K, p *pgxpool.Pool) error { p.Close(); return nil }
	}
	if opts.HealthCheck && co.HealthCheck == nil {
		co.HealthCheck = func(ctx context.Context, _ K, p *pgxpool.Pool) error { return p.Ping(ctx) }
	}
	if a.budget != nil {
		closePool := co.Close
		co.Close = func(key K, p *pgxpool.Pool) error {
			err := closePool(key, p)
			a.pools.Delete(p)
			return err
		}
		a.budget.AddReclaimer(budget.Reclaimer{Reclaim: a.reclaim})
	}
	c, err := rescache.New(a.build, &co)
	if err != nil {
		return nil, fmt.Errorf("pgxadapter: %w", err)
	}
	w := weak.Make(c)
	budgets.Store(w, a)
	runtime.AddCleanup(c, func(w weak.Pointer[rescache.Cache[K, *pgxpool.Pool]]) { budgets.Delete(w) }, w)
	return c, nil
}

// adapter holds the validated options of one cache; read-only after New
// but for pools.
type adapter[K comparable] struct {
	config      func(ctx context.Context, key K) (*pgxpool.Config, error)
	pingTimeout time.Duration
	keyString   func(K) string
	budget      budget.Budget // nil without one

	// pools maps each open pool of the cache to its last use (unix
	// nanoseconds of its last release), for the reclaimer's order.
	pools sync.Map // *pgxpool.Pool -> *atomic.Int64
}

// build opens the tenant's pool and pings it. A panic in any step (the
// caller's Config, pgx while the pool opens or pings, the caller's hooks)
// is recovered here, so that the pool is closed and the error is an *Error
// whose text is masked like any other.
func (a *adapter[K]) build(ctx context.Context, key K) (_ *pgxpool.Pool, err error) {
	op, password := "config", ""
	var pool *pgxpool.Pool
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		if pool != nil {
			pool.Close()
			a.pools.Delete(pool)
		}
		if r != nil {
			pe := &rescache.PanicError{Key: key, Value: maskValue(r, password), Stack: debug.Stack()}
			err = &Error{Tenant: a.keyString(key), Op: op, Err: &panicCause{pe}}
		}
	}()
	fail := func(err error) (*pgxpool.Pool, error) {
		returned = true
		if pool != nil {
			pool.Close()
			a.pools.Delete(pool)
		}
		return nil, &Error{Tenant: a.keyString(key), Op: op, Err: mask(err, password)}
	}

	cfg, err := a.config(ctx, key)
	if err != nil {
		return fail(err)
	}
	if cfg == nil {
		return fail(errors.New("Options.Config returned a nil config"))
	}
	cfg = cfg.Copy()
	password = cfg.ConnConfig.Password
	lastUse := new(atomic.Int64)
	if a.budget != nil {
		a.addBudget(cfg, lastUse)
	}
	op = "new"
	pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		pool = nil
		return fail(err)
	}
	if a.budget != nil {
		lastUse.Store(time.Now().UnixNano())
		a.pools.Store(pool, lastUse)
	}
	op = "ping"
	pctx, cancel := context.WithTimeout(ctx, a.pingTimeout)
	err = pool.Ping(pctx)
	cancel()
	if err != nil {
		return fail(err)
	}
	returned = true
	return pool, nil
}

// addBudget counts cfg's connections in the budget around its DialFunc,
// and closes a released connection instead of keeping it idle while a
// place is awaited; lastUse records the pool's last release.
func (a *adapter[K]) addBudget(cfg *pgxpool.Config, lastUse *atomic.Int64) {
	dial := cfg.ConnConfig.DialFunc
	if dial == nil {
		d := &net.Dialer{KeepAlive: 5 * time.Minute}
		dial = d.DialContext
	}
	b := a.budget
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := b.Acquire(ctx); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			b.Release()
			return nil, err
		}
		return &budgetConn{Conn: c, release: b.Release}, nil
	}
	after := cfg.AfterRelease
	cfg.AfterRelease = func(c *pgx.Conn) bool {
		lastUse.Store(time.Now().UnixNano())
		if after != nil && !after(c) {
			return false
		}
		return !b.Contended()
	}
}

// budgetConn gives its place back once, closeSettle after it is closed.
type budgetConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// closeSettle is how long a closed connection still counts in the budget:
// PostgreSQL ends the session a moment after the client closes the socket,
// so a connection opened at once could find the old one still counted on
// the server (pg_stat_activity, max_connections). sqladapter waits as long,
// for the same reason.
const closeSettle = 10 * time.Millisecond

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { time.AfterFunc(closeSettle, c.release) })
	return err
}

// reclaim closes the idle connections of the least recently used pool
// that has any, and returns how many it closed.
func (a *adapter[K]) reclaim() int {
	type cand struct {
		p    *pgxpool.Pool
		used int64
	}
	var cands []cand
	a.pools.Range(func(k, v any) bool {
		p := k.(*pgxpool.Pool)
		if p.Stat().IdleConns() > 0 {
			cands = append(cands, cand{p, v.(*atomic.Int64).Load()})
		}
		return true
	})
	for len(cands) > 0 {
		oldest := 0
		for i, c := range cands {
			if c.used < cands[oldest].used {
				oldest = i
			}
		}
		p := cands[oldest].p
		cands = append(cands[:oldest], cands[oldest+1:]...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		idle := p.AcquireAllIdle(ctx)
		n := 0
		for _, c := range idle {
			c.Conn().Close(ctx) // a closed connection is destroyed at its release
			c.Release()
			n++
		}
		cancel()
		if n > 0 {
			return n
		}
	}
	return 0
}

// panicCause is the cause of an *Error for a panic: its text is the panic
// value's, and it unwraps to the PanicError.
type panicCause struct{ pe *rescache.PanicError }

func (p *panicCause) Error() string { return fmt.Sprintf("panic: %v", p.pe.Value) }
func (p *panicCause) Unwrap() error { return p.pe }

// mask returns err, or a copy of its text with password masked when the
// text holds it (answering errors.Is like err, not errors.As).
func mask(err error, password string) error {
	if password == "" {
		return err
	}
	msg := err.Error()
	if red := maskText(msg, password); red != msg {
		return &maskedError{msg: red, err: err}
	}
	return err
}

// maskValue masks a panic value's text like mask.
func maskValue(r any, password string) any {
	if password == "" {
		return r
	}
	text := fmt.Sprint(r)
	red := maskText(text, password)
	if red == text {
		return r
	}
	if err, ok := r.(error); ok {
		return &maskedError{msg: red, err: err}
	}
	return red
}

// maskText replaces password in text, as written and URL-escaped, with
// "xxxxx".
func maskText(text, password string) string {
	for _, p := range []string{password, urlEscape(password)} {
		if p != "" {
			text = strings.ReplaceAll(text, p, "xxxxx")
		}
	}
	return text
}

func urlEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// maskedError carries the masked text of an error whose text held a
// password; it answers errors.Is like that error but does not unwrap to it.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string        { return e.msg }
func (e *maskedError) Is(target error) bool { return errors.Is(e.err, target) }

// budgets maps each cache made by New, by a weak pointer (so that the map
// does not keep it alive), to its adapter, for PoolBudget; a cleanup
// deletes the entry when the cache is collected.
var budgets sync.Map // weak.Pointer[rescache.Cache[K, *pgxpool.Pool]] -> *adapter[K]

// PoolStats returns pgxpool's figures of every tenant's pool in the cache.
func PoolStats[K comparable](c *rescache.Cache[K, *pgxpool.Pool]) map[K]*pgxpool.Stat {
	out := make(map[K]*pgxpool.Stat)
	for k, p := range c.All() {
		out[k] = p.Stat()
	}
	return out
}

// DBStats returns the figures of every tenant's pool in the form of
// sql.DBStats, for the exporters that take that form
// (promcollector.NewSQLPoolsFunc, otelmetrics.RegisterSQLPools), so that
// they need not import pgx. The fields map as: MaxOpenConnections =
// MaxConns, OpenConnections = TotalConns, InUse = AcquiredConns, Idle =
// IdleConns, WaitCount = EmptyAcquireCount (acquires that found no idle
// connection and waited for one), WaitDuration = EmptyAcquireWaitTime,
// MaxIdleTimeClosed = MaxIdleDestroyCount, MaxLifetimeClosed =
// MaxLifetimeDestroyCount; MaxIdleClosed is 0 (pgxpool has no idle limit
// but MinIdleConns).
func DBStats[K comparable](c *rescache.Cache[K, *pgxpool.Pool]) map[K]sql.DBStats {
	out := make(map[K]sql.DBStats)
	for k, p := range c.All() {
		out[k] = dbStats(p.Stat())
	}
	return out
}

func dbStats(s *pgxpool.Stat) sql.DBStats {
	return sql.DBStats{
		MaxOpenConnections: int(s.MaxConns()),
		OpenConnections:    int(s.TotalConns()),
		InUse:              int(s.AcquiredConns()),
		Idle:               int(s.IdleConns()),
		WaitCount:          s.EmptyAcquireCount(),
		WaitDuration:       s.EmptyAcquireWaitTime(),
		MaxIdleTimeClosed:  s.MaxIdleDestroyCount(),
		MaxLifetimeClosed:  s.MaxLifetimeDestroyCount(),
	}
}

// PoolBudget returns the figures of the cache's budget; the zero
// budget.Stats for a cache without one (or not made by New).
func PoolBudget[K comparable](c *rescache.Cache[K, *pgxpool.Pool]) budget.Stats {
	v, ok := budgets.Load(weak.Make(c))
	if !ok {
		return budget.Stats{}
	}
	a := v.(*adapter[K])
	if a.budget == nil {
		return budget.Stats{}
	}
	return a.budget.Stats()
}
