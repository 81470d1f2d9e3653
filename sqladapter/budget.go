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

	"github.com/rescache/rescache"
	rbudget "github.com/rescache/rescache/budget"
)

// ErrBudgetWait is matched with errors.Is by the error of a query, or of a
// build's ping, whose context ended while it waited for a connection of the
// budget ([Options.MaxTotalConns] or [Options.Budget]). The same error also
// matches the context's error (context.DeadlineExceeded or
// context.Canceled).
var ErrBudgetWait = errors.New("sqladapter: no connection of the MaxTotalConns budget became free")

// budget is one cache's use of a connection budget: the places come from b
// (a budget.Local for Options.MaxTotalConns, or Options.Budget, which other
// caches and processes may share); the pools are those of this cache, whose
// idle connections its reclaimer closes. It is safe for concurrent use. It
// has no goroutine of its own; the only code that runs later is a timer's
// release (releaseSettled).
type budget struct {
	b      rbudget.Budget
	remove func()    // removes the reclaimer from b
	epoch  time.Time // origin of budgetPool.lastUse

	reclaimed  atomic.Int64 // idle connections of other pools closed by reclaim
	handedOver atomic.Int64 // connections closed on return because someone waited

	mu    sync.Mutex              // protects pools
	pools map[*sql.DB]*budgetPool // pools open now, evicted ones included until closed
}

// budgetPool is one tenant pool under a budget.
type budgetPool struct {
	budget  *budget
	db      *sql.DB      // set before the pool is registered; read-only after
	maxIdle int          // the pool's MaxIdleConns setting, restored after a reclaim
	pick    *pickPool    // the queue of idle connections under LeastRecentlyUsed; nil under MostRecentlyUsed
	lastUse atomic.Int64 // nanoseconds since budget.epoch of the last connection use
}

// newBudget returns the budget of a cache over b and registers its
// reclaimer with b.
func newBudget(b rbudget.Budget) *budget {
	bu := &budget{
		b:     b,
		epoch: time.Now(),
		pools: make(map[*sql.DB]*budgetPool),
	}
	bu.remove = b.AddReclaimer(rbudget.Reclaimer{Reclaim: bu.reclaim})
	return bu
}

// touch records a use of the pool, for the least recently used order of
// reclaims.
func (p *budgetPool) touch() { p.lastUse.Store(int64(time.Since(p.budget.epoch))) }

// open returns a new pool over inner whose connections are counted in b,
// with settings applied, and adds it to the pools reclaims look at.
func (b *budget) open(inner driver.Connector, settings PoolSettings) *budgetPool {
	p := &budgetPool{budget: b, maxIdle: settings.MaxIdleConns}
	c := &budgetConnector{inner: inner, pool: p}
	if settings.Pick == LeastRecentlyUsed {
		p.db, p.pick = openPicked(c, settings)
	} else {
		p.db = sql.OpenDB(c)
		settings.apply(p.db)
	}
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

// acquire takes one connection of the budget for a connection that a pool
// is about to open. When the budget is full, b.b calls the reclaimers
// (this cache's reclaim closes the idle connections of its least recently
// used pool that has any), then waits, first come first served, until a
// connection is closed or ctx ends. While anyone waits, connections put
// back in any pool are closed instead of kept idle (budgetConn.IsValid), so
// a waiter never waits for idle connections to time out.
func (b *budget) acquire(ctx context.Context) error {
	if err := b.b.Acquire(ctx); err != nil {
		return fmt.Errorf("%w (%d connections, all held): %w", ErrBudgetWait, b.b.Stats().Max, err)
	}
	return nil
}

// release gives back one connection of the budget.
func (b *budget) release() { b.b.Release() }

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

// reclaim closes the idle connections of the least recently used pool
// that has any, and returns how many it closed. Their places come back
// after closeSettle, to the first of the waiters: each caller that finds
// the budget full frees at least one place when any pool has an idle
// connection, so waiters never outnumber the places on their way while
// idle connections remain.
func (b *budget) reclaim() int {
	b.mu.Lock()
	pools := make([]*budgetPool, 0, len(b.pools))
	for _, p := range b.pools {
		pools = append(pools, p)
	}
	b.mu.Unlock()
	slices.SortFunc(pools, func(x, y *budgetPool) int {
		return cmp.Compare(x.lastUse.Load(), y.lastUse.Load())
	})
	for _, p := range pools {
		if p.pick != nil {
			// LeastRecentlyUsed: the idle connections are in its queue.
			if n := p.pick.closeIdle(); n > 0 {
				b.reclaimed.Add(n)
				return int(n)
			}
			continue
		}
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
			return int(n)
		}
	}
	return 0
}

// BudgetStats are the figures of a cache's budget ([Options.MaxTotalConns]
// or [Options.Budget]).
type BudgetStats struct {
	// MaxTotalConns is the size of the budget (for a fleet budget, that of
	// the whole fleet); 0 means the cache has none and every other field is
	// zero.
	MaxTotalConns int
	// Held is the number of places of the budget held in this process:
	// connections open in all pools of the cache (and of any other cache
	// sharing Options.Budget), evicted pools still draining included, and
	// those closed in the last 10ms, while the server ends their sessions.
	Held int
	// FleetHeld is the number of places held by the whole fleet, as last
	// seen (for a budget of one process, Held).
	FleetHeld int
	// Waiting is the number of connections being waited for now.
	Waiting int
	// WaitCount is the total number of connections that found the budget
	// full and had to reclaim or wait.
	WaitCount int64
	// WaitDuration is the total time those connections reclaimed or waited.
	WaitDuration time.Duration
	// Reclaimed is the total number of idle connections of this cache's
	// tenants closed to make room, when the budget was full.
	Reclaimed int64
	// HandedOver is the total number of connections closed when they were
	// put back in their pool, instead of kept idle, because a connection
	// was awaited.
	HandedOver int64
	// RenewFailures and Fallbacks count a fleet budget's failed lease
	// renewals and its switches to the local fallback share; Fallback tells
	// whether it is on that share now (see budget.Stats).
	RenewFailures int64
	Fallbacks     int64
	Fallback      bool
}

func (b *budget) stats() BudgetStats {
	s := b.b.Stats()
	return BudgetStats{
		MaxTotalConns: s.Max,
		Held:          s.Held,
		FleetHeld:     s.FleetHeld,
		Waiting:       s.Waiting,
		WaitCount:     s.WaitCount,
		WaitDuration:  s.WaitDuration,
		Reclaimed:     b.reclaimed.Load(),
		HandedOver:    b.handedOver.Load(),
		RenewFailures: s.RenewFailures,
		Fallbacks:     s.Fallbacks,
		Fallback:      s.Fallback,
	}
}

// budgets maps a cache made by [New] with a budget, by a weak pointer, to
// its budget. A cleanup deletes the entry when the cache is collected.
var budgets sync.Map // weak.Pointer[rescache.Cache[K, *sql.DB]] -> *budget

// registerBudget also removes the cache's reclaimer from the budget when
// the cache is collected (its pools are all closed by then, so the
// reclaimer has nothing left to close).
func registerBudget[K comparable](c *rescache.Cache[K, *sql.DB], b *budget) {
	key := weak.Make(c)
	budgets.Store(key, b)
	remove := b.remove
	runtime.AddCleanup(c, func(k weak.Pointer[rescache.Cache[K, *sql.DB]]) {
		budgets.Delete(k)
		remove()
	}, key)
}

// PoolBudget returns the figures of the budget ([Options.MaxTotalConns] or
// [Options.Budget]) of c, a cache made by [New]: its size, the connections
// held, waits, wait time, reclaims and, for a fleet budget, the fleet's
// figures. For a cache without a budget it returns the zero
// BudgetStats. Like [PoolStats] it takes no lease and may be called as often
// as a metrics scrape wants.
func PoolBudget[K comparable](c *rescache.Cache[K, *sql.DB]) BudgetStats {
	v, ok := budgets.Load(weak.Make(c))
	if !ok {
		return BudgetStats{}
	}
	return v.(*budget).stats()
}
