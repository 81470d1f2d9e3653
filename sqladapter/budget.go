package sqladapter

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"golang.org/x/sync/semaphore"

	"github.com/rescache/rescache"
)

// ErrBudgetWait is matched with errors.Is by the error of a query, or of a
// build's ping, whose context ended while it waited for a connection of the
// [Options.MaxTotalConns] budget. The same error also matches the
// context's error (context.DeadlineExceeded or context.Canceled).
var ErrBudgetWait = errors.New("sqladapter: no connection of the MaxTotalConns budget became free")

// budget bounds the connections that all pools of one cache hold open at
// once. It is safe for concurrent use. It has no goroutine of its own; the
// only code that runs later is a timer's release (releaseSettled).
type budget struct {
	max   int64
	sem   *semaphore.Weighted // one unit per open connection, FIFO for waiters
	epoch time.Time           // origin of budgetPool.lastUse

	held       atomic.Int64 // units taken from sem: connections open, or closed less than closeSettle ago
	waiting    atomic.Int64 // callers of acquire that have not got a unit yet
	waits      atomic.Int64 // acquires that found the budget full
	waitNanos  atomic.Int64 // total time those acquires waited
	reclaimed  atomic.Int64 // idle connections of other pools closed by acquire
	handedOver atomic.Int64 // connections closed on return because someone waited

	mu    sync.Mutex              // protects pools
	pools map[*sql.DB]*budgetPool // pools open now, evicted ones included until closed
}

// budgetPool is one tenant pool under a budget.
type budgetPool struct {
	budget  *budget
	db      *sql.DB      // set before the pool is registered; read-only after
	maxIdle int          // the pool's MaxIdleConns setting, restored after a reclaim
	lastUse atomic.Int64 // nanoseconds since budget.epoch of the last connection use
}

func newBudget(max int) *budget {
	return &budget{
		max:   int64(max),
		sem:   semaphore.NewWeighted(int64(max)),
		epoch: time.Now(),
		pools: make(map[*sql.DB]*budgetPool),
	}
}

// touch records a use of the pool, for the least recently used order of
// reclaims.
func (p *budgetPool) touch() { p.lastUse.Store(int64(time.Since(p.budget.epoch))) }

// open returns a new pool over inner whose connections are counted in b,
// with settings applied, and adds it to the pools reclaims look at.
func (b *budget) open(inner driver.Connector, settings PoolSettings) *budgetPool {
	p := &budgetPool{budget: b, maxIdle: settings.MaxIdleConns}
	p.db = sql.OpenDB(&budgetConnector{inner: inner, pool: p})
	settings.apply(p.db)
	p.touch()
	b.mu.Lock()
	b.pools[p.db] = p
	b.mu.Unlock()
	return p
}

// forget removes a closed pool from the pools reclaims look at. Its
// connections still in use give their budget back when database/sql closes
// them.
func (b *budget) forget(db *sql.DB) {
	b.mu.Lock()
	delete(b.pools, db)
	b.mu.Unlock()
}

// acquire takes one connection of the budget for a connection that self is
// about to open. When the budget is full it first closes the idle
// connections of the least recently used other pool that has any; then it
// waits, first come first served, until a connection is closed (those it
// closed, or others) or ctx ends. While anyone waits, connections put
// back in any pool are closed instead of kept idle (budgetConn.IsValid), so
// a waiter never waits for idle connections to time out.
func (b *budget) acquire(ctx context.Context, self *budgetPool) error {
	if b.sem.TryAcquire(1) {
		b.held.Add(1)
		return nil
	}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	b.waits.Add(1)
	start := time.Now()
	defer func() { b.waitNanos.Add(int64(time.Since(start))) }()

	b.reclaim(self)
	if err := b.sem.Acquire(ctx, 1); err != nil {
		return fmt.Errorf("%w (%d connections, all held): %w", ErrBudgetWait, b.max, err)
	}
	b.held.Add(1)
	return nil
}

// release gives back one connection of the budget.
func (b *budget) release() {
	b.held.Add(-1)
	b.sem.Release(1)
}

// closeSettle is how long a closed connection still counts in the budget.
// A driver's Close sends its goodbye (PostgreSQL's Terminate, MySQL's
// COM_QUIT) and closes the socket, but the server ends the session a moment
// later: a new connection opened at once could find the old one still
// counted on the server (pg_stat_activity, the process list, and its
// max_connections). The wrapper has no socket to wait on, so it waits this
// long, which covers the teardown of the servers we test against by a wide
// margin.
const closeSettle = 10 * time.Millisecond

// releaseSettled gives back one connection of the budget after
// closeSettle. The timer's function is the only code that runs after it.
func (b *budget) releaseSettled() { time.AfterFunc(closeSettle, b.release) }

// reclaim closes the idle connections of the least recently used pool,
// other than self, that has any, and reports whether it found one. Their
// places come back after closeSettle, to the first of the waiters: each
// caller that finds the budget full frees at least one place when any pool
// has an idle connection, so waiters never outnumber the places on their
// way while idle connections remain.
func (b *budget) reclaim(self *budgetPool) bool {
	b.mu.Lock()
	pools := make([]*budgetPool, 0, len(b.pools))
	for _, p := range b.pools {
		if p != self {
			pools = append(pools, p)
		}
	}
	b.mu.Unlock()
	slices.SortFunc(pools, func(x, y *budgetPool) int {
		return cmp.Compare(x.lastUse.Load(), y.lastUse.Load())
	})
	for _, p := range pools {
		st := p.db.Stats()
		if st.Idle == 0 {
			continue
		}
		// SetMaxIdleConns(0) closes the pool's idle connections before it
		// returns; the pool then keeps idle connections again.
		p.db.SetMaxIdleConns(0)
		p.db.SetMaxIdleConns(p.maxIdle)
		if n := p.db.Stats().MaxIdleClosed - st.MaxIdleClosed; n > 0 {
			b.reclaimed.Add(n)
			return true
		}
	}
	return false
}

// BudgetStats are the figures of a cache's [Options.MaxTotalConns] budget.
type BudgetStats struct {
	// MaxTotalConns is the size of the budget; 0 means the cache has none
	// and every other field is zero.
	MaxTotalConns int
	// Held is the number of connections open now in all pools of the cache,
	// evicted pools still draining included, and of those closed in the
	// last 10ms, while the server ends their sessions.
	Held int
	// Waiting is the number of connections being waited for now.
	Waiting int
	// WaitCount is the total number of connections that found the budget
	// full and had to reclaim or wait.
	WaitCount int64
	// WaitDuration is the total time those connections reclaimed or waited.
	WaitDuration time.Duration
	// Reclaimed is the total number of idle connections of other tenants
	// closed to make room, when the budget was full.
	Reclaimed int64
	// HandedOver is the total number of connections closed when they were
	// put back in their pool, instead of kept idle, because a connection
	// was awaited.
	HandedOver int64
}

func (b *budget) stats() BudgetStats {
	return BudgetStats{
		MaxTotalConns: int(b.max),
		Held:          int(b.held.Load()),
		Waiting:       int(b.waiting.Load()),
		WaitCount:     b.waits.Load(),
		WaitDuration:  time.Duration(b.waitNanos.Load()),
		Reclaimed:     b.reclaimed.Load(),
		HandedOver:    b.handedOver.Load(),
	}
}

// budgets maps a cache made by [New] with a budget, by a weak pointer, to
// its budget. A cleanup deletes the entry when the cache is collected.
var budgets sync.Map // weak.Pointer[rescache.Cache[K, *sql.DB]] -> *budget

func registerBudget[K comparable](c *rescache.Cache[K, *sql.DB], b *budget) {
	key := weak.Make(c)
	budgets.Store(key, b)
	runtime.AddCleanup(c, func(k weak.Pointer[rescache.Cache[K, *sql.DB]]) { budgets.Delete(k) }, key)
}

// PoolBudget returns the figures of the [Options.MaxTotalConns] budget of
// c, a cache made by [New]: its size, the connections held, waits, wait
// time and reclaims. For a cache without a budget it returns the zero
// BudgetStats. Like [PoolStats] it takes no lease and may be called as often
// as a metrics scrape wants.
func PoolBudget[K comparable](c *rescache.Cache[K, *sql.DB]) BudgetStats {
	v, ok := budgets.Load(weak.Make(c))
	if !ok {
		return BudgetStats{}
	}
	return v.(*budget).stats()
}
