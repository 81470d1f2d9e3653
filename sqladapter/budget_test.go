package sqladapter_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// The tests in this file check the accounting of Options.MaxTotalConns on
// the fake driver, inside synctest bubbles: every tenant's pool connects to
// one fake server, whose open count is the cache's total.

// newBudgetCache returns a cache with a budget of max connections whose
// tenants all connect to srv, closed at the end of the test.
func newBudgetCache(t *testing.T, srv *fakeServer, max int, edit func(*sqladapter.Options[string])) *rescache.Cache[string, *sql.DB] {
	t.Helper()
	opts := sqladapter.Options[string]{
		Driver:        fakeDriverName,
		DSN:           func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil },
		MaxTotalConns: max,
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := sqladapter.New(opts)
	if err != nil {
		t.Fatalf("sqladapter.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkDrained checks that, c being closed, every connection that was
// opened was closed and given back to the budget exactly once.
func checkDrained(t *testing.T, c *rescache.Cache[string, *sql.DB], srv *fakeServer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// A closed connection still counts for a few milliseconds, while the
	// server ends its session.
	time.Sleep(time.Second)
	synctest.Wait()
	if n := srv.open.Load(); n != 0 {
		t.Errorf("%d connections open after Close; want 0", n)
	}
	if st := sqladapter.PoolBudget(c); st.Held != 0 || st.Waiting != 0 {
		t.Errorf("PoolBudget after Close = %+v; want Held 0, Waiting 0", st)
	}
}

func TestBudgetRejectsNegative(t *testing.T) {
	_, err := sqladapter.New(sqladapter.Options[string]{
		Driver:        fakeDriverName,
		DSN:           func(context.Context, string) (string, error) { return "x", nil },
		MaxTotalConns: -1,
	})
	if err == nil || !strings.Contains(err.Error(), "MaxTotalConns") {
		t.Errorf("New(MaxTotalConns -1) error = %v; want one naming MaxTotalConns", err)
	}
}

func TestPoolBudgetWithoutBudget(t *testing.T) {
	c := newFakeCache(t, nil)
	if st := sqladapter.PoolBudget(c); st != (sqladapter.BudgetStats{}) {
		t.Errorf("PoolBudget of a cache without a budget = %+v; want zero", st)
	}
}

// Many tenants, each with more concurrent queries than its MaxOpenConns,
// through a cache that evicts (MaxEntries 4) and a server that goes down
// for a while (failed connects, ErrBadConn from queries): the server never
// sees more than the budget, and after Close every connection has been
// given back.
func TestBudgetHoldsUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer(t.Name())
		const max = 6
		c := newBudgetCache(t, srv, max, func(o *sqladapter.Options[string]) {
			o.Cache.MaxEntries = 4
		})
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for i := range 40 {
			tenant := fmt.Sprintf("t%d", i%10)
			wg.Go(func() {
				for j := range 5 {
					if i == 20 && j == 2 {
						// The server goes down for 15ms in the middle of
						// the load.
						srv.down.Store(true)
						time.Sleep(15 * time.Millisecond)
						srv.down.Store(false)
					}
					l, err := c.Lease(ctx, tenant)
					if err == nil {
						var got string
						qctx, cancel := context.WithTimeout(ctx, time.Minute)
						err = l.Value().QueryRowContext(qctx, "SELECT server").Scan(&got)
						cancel()
						l.Release()
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		if p := srv.peak.Load(); p > max {
			t.Errorf("server saw %d connections at once; want at most %d", p, max)
		}
		if srv.connects.Load() <= max {
			t.Errorf("%d connects; want more than the budget, so that the test exercises it", srv.connects.Load())
		}
		if len(errs) > 100 {
			t.Errorf("%d of 200 requests failed; want most to succeed", len(errs))
		}
		for _, err := range errs {
			if errors.Is(err, sqladapter.ErrBudgetWait) {
				t.Errorf("a query failed waiting for the budget: %v", err)
			}
		}
		checkDrained(t, c, srv)
	})
}

// A pool evicted while leased keeps its connections, counted, until its
// last lease is released; then they are given back. The pool leaves the
// cache through Invalidate under a Lease and under Acquire's release func,
// and through the Discard of one of two leases.
func TestBudgetCountsDrainingPools(t *testing.T) {
	type leased struct {
		db      *sql.DB
		evict   func() // takes the pool out of the cache while it is leased
		release func() // releases its last lease
	}
	for _, tc := range []struct {
		name  string
		lease func(c *rescache.Cache[string, *sql.DB]) (leased, error)
	}{
		{"Lease", func(c *rescache.Cache[string, *sql.DB]) (leased, error) {
			l, err := c.Lease(context.Background(), "acme")
			return leased{l.Value(), func() { c.Invalidate("acme") }, l.Release}, err
		}},
		{"Acquire", func(c *rescache.Cache[string, *sql.DB]) (leased, error) {
			db, release, err := c.Acquire(context.Background(), "acme")
			return leased{db, func() { c.Invalidate("acme") }, release}, err
		}},
		{"Discard", func(c *rescache.Cache[string, *sql.DB]) (leased, error) {
			broken, err := c.Lease(context.Background(), "acme")
			if err != nil {
				return leased{}, err
			}
			other, err := c.Lease(context.Background(), "acme") // another request, still running
			return leased{broken.Value(), broken.Discard, other.Release}, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFakeServer(t.Name())
				c := newBudgetCache(t, srv, 3, func(o *sqladapter.Options[string]) { o.PingTimeout = time.Second })
				ctx := context.Background()
				l, err := tc.lease(c)
				if err != nil {
					t.Fatal(err)
				}
				var conns []*sql.Conn
				for range 3 {
					conn, err := l.db.Conn(ctx)
					if err != nil {
						t.Fatal(err)
					}
					conns = append(conns, conn)
				}
				l.evict()
				if _, ok := c.Peek("acme"); ok {
					t.Error("acme is still cached after its eviction")
				}
				if st := sqladapter.PoolBudget(c); st.Held != 3 {
					t.Errorf("Held = %d with an evicted pool holding 3; want 3", st.Held)
				}
				// The budget is full of the evicted pool's connections: a new
				// tenant's build waits for one until its ping times out.
				_, err = c.Get(ctx, "globex")
				if !errors.Is(err, sqladapter.ErrBudgetWait) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Get(globex) with the budget held = %v; want ErrBudgetWait and DeadlineExceeded", err)
				}
				checkTenantError(t, err, "globex", "ping")
				for _, conn := range conns {
					conn.Close()
				}
				l.release()
				synctest.Wait()
				if n := srv.open.Load(); n != 0 {
					t.Errorf("%d connections open after the evicted pool's last lease; want 0", n)
				}
				if _, err := c.Get(ctx, "globex"); err != nil {
					t.Errorf("Get(globex) after the drain: %v", err)
				}
				checkDrained(t, c, srv)
			})
		})
	}
}

// A tenant that arrives when the budget is held by idle connections of
// others takes the least recently used tenant's idle connections at once,
// without waiting.
func TestBudgetReclaimsIdleLeastRecentlyUsedFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer(t.Name())
		c := newBudgetCache(t, srv, 4, nil)
		ctx := context.Background()
		idle := func(tenant string) {
			db, err := c.Get(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			a, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			b.Close()
		}
		idle("old")
		time.Sleep(time.Second)
		idle("recent")
		if st := sqladapter.PoolBudget(c); st.Held != 4 {
			t.Fatalf("Held = %d; want 4 (two idle connections per tenant)", st.Held)
		}
		start := time.Now()
		db, err := c.Get(ctx, "newcomer")
		if err != nil {
			t.Fatalf("Get(newcomer) with the budget held by idle connections: %v", err)
		}
		// It waits only while the reclaimed connections' sessions end on
		// the server (10ms).
		if d := time.Since(start); d > 20*time.Millisecond {
			t.Errorf("the newcomer waited %v; want 10ms at most", d)
		}
		synctest.Wait() // the other reclaimed connection's place comes back
		stats := sqladapter.PoolStats(c)
		if n := stats["old"].Idle; n != 0 {
			t.Errorf("least recently used tenant keeps %d idle connections; want 0", n)
		}
		if n := stats["recent"].Idle; n != 2 {
			t.Errorf("recently used tenant keeps %d idle connections; want 2", n)
		}
		st := sqladapter.PoolBudget(c)
		if st.Reclaimed != 2 || st.WaitCount != 1 || st.Held != 3 {
			t.Errorf("PoolBudget = %+v; want Reclaimed 2, WaitCount 1, Held 3", st)
		}
		// The reclaimed tenant keeps idle connections again afterwards.
		var got string
		if err := db.QueryRowContext(ctx, "SELECT server").Scan(&got); err != nil {
			t.Fatal(err)
		}
		checkDrained(t, c, srv)
	})
}

// A waiter gets the first connection put back by another tenant, which is
// closed instead of kept idle; a waiter whose context ends gets
// ErrBudgetWait and holds nothing.
func TestBudgetWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer(t.Name())
		c := newBudgetCache(t, srv, 2, nil)
		ctx := context.Background()
		other, err := c.Get(ctx, "other")
		if err != nil {
			t.Fatal(err)
		}
		db, err := c.Get(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		// acme holds both connections of the budget (its second one
		// reclaimed other's idle connection).
		c1, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}

		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = other.QueryRowContext(qctx, "SELECT server").Scan(new(string))
		cancel()
		if !errors.Is(err, sqladapter.ErrBudgetWait) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("query with the budget held = %v; want ErrBudgetWait and DeadlineExceeded", err)
		}
		if want := "sqladapter: no connection of the MaxTotalConns budget became free (2 connections, all held): context deadline exceeded"; err.Error() != want {
			t.Errorf("error = %q; want %q", err, want)
		}

		done := make(chan error, 1)
		go func() { done <- other.QueryRowContext(ctx, "SELECT server").Scan(new(string)) }()
		synctest.Wait()
		if st := sqladapter.PoolBudget(c); st.Waiting != 1 {
			t.Fatalf("Waiting = %d; want 1", st.Waiting)
		}
		c1.Close() // put back while other waits: closed, its place handed over
		if err := <-done; err != nil {
			t.Errorf("waiting query: %v", err)
		}
		if n := sqladapter.PoolStats(c)["acme"].OpenConnections; n != 1 {
			t.Errorf("acme has %d connections after handing one over; want 1", n)
		}
		if st := sqladapter.PoolBudget(c); st.HandedOver != 1 {
			t.Errorf("HandedOver = %d; want 1", st.HandedOver)
		}
		c2.Close()
		checkDrained(t, c, srv)
	})
}

// Connects that fail, before or after the budget is taken, give it back.
func TestBudgetFailedConnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer(t.Name())
		c := newBudgetCache(t, srv, 2, nil)
		ctx := context.Background()
		srv.down.Store(true)
		for i := range 5 {
			if _, err := c.Get(ctx, fmt.Sprint("t", i)); err == nil {
				t.Fatal("Get with the server down succeeded")
			}
		}
		if st := sqladapter.PoolBudget(c); st.Held != 0 {
			t.Errorf("Held = %d after failed connects; want 0", st.Held)
		}
		srv.down.Store(false)
		srv.block.Store(true)
		if _, err := c.Get(ctx, "slow"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Get with connects blocked = %v; want DeadlineExceeded", err)
		}
		srv.block.Store(false)
		if st := sqladapter.PoolBudget(c); st.Held != 0 {
			t.Errorf("Held = %d after timed-out connects; want 0", st.Held)
		}
		for i := range 2 {
			if _, err := c.Get(ctx, fmt.Sprint("t", i)); err != nil {
				t.Errorf("Get after the server is back: %v", err)
			}
		}
		checkDrained(t, c, srv)
	})
}
