package contender

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// BurstLoad is a tenant burst against a simulated database server: Tenants
// tenants arrive at once, PerTenant requests each, all started together,
// through a cache bounded at MaxEntries (fewer than the tenants, so that
// tenants are evicted during the burst). Each tenant's value is a pool of
// at most PoolSize connections; its build opens one connection (a ping)
// and keeps it idle. A request gets its tenant's pool, takes a connection
// (idle, or a new one), holds it for Use, puts it back idle and releases
// the value. The Server counts the connections open to it.
type BurstLoad struct {
	Tenants    int           // tenants in the burst
	PerTenant  int           // requests per tenant, all at once
	MaxEntries int           // the cache's bound
	PoolSize   int           // connections per tenant pool
	Connect    time.Duration // time to open a connection
	Use        time.Duration // time a request holds its connection
	Budget     int           // connections across all pools; 0: no budget
	BudgetWait time.Duration // how long a connect waits for the budget
	Timeout    time.Duration // a request's deadline
}

// DefaultBurstLoad is the seedtable command's burst: 200 tenants, 4
// requests each, MaxEntries 50, pools of 4, connects of 1 ms, uses of 5 ms,
// and with a budget, 100 connections, waited for up to 1 s.
var DefaultBurstLoad = BurstLoad{
	Tenants:    200,
	PerTenant:  4,
	MaxEntries: 50,
	PoolSize:   4,
	Connect:    time.Millisecond,
	Use:        5 * time.Millisecond,
	Budget:     0,
	BudgetWait: time.Second,
	Timeout:    5 * time.Second,
}

// BurstResult is what one run of a BurstLoad measured.
type BurstResult struct {
	// Requests counts requests made; Failed those that got no connection:
	// the build failed, the pool was closed under the request, or the
	// budget or the deadline ran out.
	Requests, Failed int64
	// Builds counts pools opened (the minimum is one per tenant).
	Builds int64
	// Peak is the most connections open at the server at once.
	Peak int64
	// LeftOpen is the connections still open once every request was done,
	// the cache was closed and its closes had a second to finish: values
	// the cache never closed.
	LeftOpen int64
	// Wall is the time from the start of the burst to the last answer.
	Wall time.Duration
}

// Validate reports an invalid field of l.
func (l BurstLoad) Validate() error {
	if l.Tenants <= 0 || l.PerTenant <= 0 || l.MaxEntries <= 0 || l.PoolSize <= 0 || l.Budget < 0 || l.Timeout <= 0 {
		return fmt.Errorf("burst load needs positive tenants, requests, bound, pool size and timeout, got %+v", l)
	}
	return nil
}

// Run runs the burst once with a fresh cache of c and a fresh server.
func (l BurstLoad) Run(ctx context.Context, c Contender) (BurstResult, error) {
	if err := l.Validate(); err != nil {
		return BurstResult{}, err
	}
	srv := &Server{Connect: l.Connect, Budget: l.Budget, BudgetWait: l.BudgetWait}
	var builds atomic.Int64
	build := func(ctx context.Context, key string) (*Resource, error) {
		builds.Add(1)
		p := newSimPool(srv, l.PoolSize)
		if err := p.conn(ctx); err != nil { // the ping
			p.close()
			return nil, err
		}
		p.put()
		return &Resource{Key: key, pool: p}, nil
	}
	cache := c.New(build, Config{MaxEntries: l.MaxEntries})

	keys := TenantKeys(l.Tenants)
	var (
		failed atomic.Int64
		wg     sync.WaitGroup
		start  = make(chan struct{})
	)
	for _, key := range keys {
		for range l.PerTenant {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(ctx, l.Timeout)
				defer cancel()
				v, release, err := cache.Get(ctx, key)
				defer release()
				if err != nil || v == nil || v.pool == nil {
					failed.Add(1)
					return
				}
				if err := v.pool.conn(ctx); err != nil {
					failed.Add(1)
					return
				}
				time.Sleep(l.Use)
				v.pool.put()
			})
		}
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)

	cache.Close()
	for deadline := time.Now().Add(time.Second); srv.Open() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // some peers close on goroutines of their own
	}
	return BurstResult{
		Requests: int64(l.Tenants * l.PerTenant),
		Failed:   failed.Load(),
		Builds:   builds.Load(),
		Peak:     srv.Peak(),
		LeftOpen: srv.Open(),
		Wall:     wall,
	}, nil
}
