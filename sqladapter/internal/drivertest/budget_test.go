package drivertest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache/sqladapter"
)

// testBudget is the MaxTotalConns of the tests in this file: small, because
// other test runs may share the servers (PostgreSQL allows 100 connections
// by default, MariaDB 151).
const testBudget = 24

// sleepQuery returns a query of b that holds its connection for a few
// milliseconds.
func sleepQuery(b *backend) string {
	switch b.name {
	case "postgres":
		return "SELECT pg_sleep(0.005)"
	case "mysql":
		return "SELECT SLEEP(0.005)"
	default:
		return "SELECT 1"
	}
}

// With a budget of 24 connections over 20 tenants of MaxOpenConns 10 and
// 160 concurrent requests, the server never shows more than 24 connections
// of the tenants, no query fails, an outside connection always succeeds,
// and none is left after Shutdown. Against PostgreSQL and MariaDB when
// their variables are set, SQLite always (there, without server counts).
func TestBudgetAcrossTenants(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.MaxTotalConns = testBudget
		})
		query := sleepQuery(b)

		stop := make(chan struct{})
		var peak atomic.Int64
		var outsideFailures []error
		var sampler sync.WaitGroup
		if b.countsConnections() {
			if err := checkServerRoom(b); err != nil {
				t.Fatal(err)
			}
			sampler.Go(func() {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					m, err := b.serverConns(ctx, b.tenants...)
					cancel()
					if err != nil {
						outsideFailures = append(outsideFailures, err)
						continue
					}
					n := 0
					for _, v := range m {
						n += v
					}
					if int64(n) > peak.Load() {
						peak.Store(int64(n))
					}
					if i%5 == 0 {
						if err := outsideConnect(b); err != nil {
							outsideFailures = append(outsideFailures, err)
						}
					}
				}
			})
		}

		var wg sync.WaitGroup
		var failed atomic.Int64
		var firstErr atomic.Value
		for i := range 160 {
			tenant := b.tenants[i%len(b.tenants)]
			wg.Go(func() {
				for range 15 {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					l, err := c.Lease(ctx, tenant)
					if err == nil {
						_, err = l.Value().ExecContext(ctx, query)
						l.Release()
					}
					cancel()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		sampler.Wait()

		st := sqladapter.PoolBudget(c)
		t.Logf("%s: budget %+v; peak server connections %d", b.name, st, peak.Load())
		if n := failed.Load(); n > 0 {
			t.Errorf("%d of 2400 queries failed; first: %v", n, firstErr.Load())
		}
		if st.WaitCount == 0 {
			t.Errorf("no connection waited for the budget; want the load to exceed it")
		}
		if p := peak.Load(); p > testBudget {
			t.Errorf("the server showed %d tenant connections at once; want at most %d", p, testBudget)
		}
		for _, err := range outsideFailures {
			t.Errorf("outside connection during the load: %v", err)
		}
		if st.Held > testBudget {
			t.Errorf("Held = %d; want at most %d", st.Held, testBudget)
		}
	})
}

// A tenant arriving when the budget is held by idle connections of other
// tenants gets a connection within about one connect time: it closes the
// idle connections of the least recently used tenant instead of waiting
// for them to time out.
func TestBudgetReclaimOnServer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.MaxTotalConns = 4
		})
		ctx := context.Background()
		twoIdle := func(tenant string) time.Duration {
			start := time.Now()
			db, err := c.Get(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			c1, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c2, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c1.Close()
			c2.Close()
			return took
		}
		connect := twoIdle(b.tenants[0])
		connect = max(connect, twoIdle(b.tenants[1]))
		if st := sqladapter.PoolBudget(c); st.Held != 4 {
			t.Fatalf("Held = %d; want 4 idle connections", st.Held)
		}

		start := time.Now()
		db, err := c.Get(ctx, b.tenants[2])
		if err != nil {
			t.Fatalf("Get with the budget held by idle connections: %v", err)
		}
		took := time.Since(start)
		if limit := 2*connect + 50*time.Millisecond; took > limit {
			t.Errorf("the newcomer's first connection took %v; want at most %v (a connect took %v)", took, limit, connect)
		}
		if err := db.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		st := sqladapter.PoolBudget(c)
		if st.Reclaimed < 1 {
			t.Errorf("PoolBudget = %+v; want a reclaim", st)
		}
		if n := sqladapter.PoolStats(c)[b.tenants[0]].Idle; n != 0 {
			t.Errorf("the least recently used tenant keeps %d idle connections; want 0", n)
		}
	})
}

// A query whose context ends while the budget is held fails with
// ErrBudgetWait and the context's error, and holds nothing afterwards
// (TestMain checks for leaked goroutines).
func TestBudgetWaiterContextEndsOnServer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.MaxTotalConns = 1
			o.PingTimeout = 200 * time.Millisecond
		})
		ctx := context.Background()
		db0, err := c.Get(ctx, b.tenants[0])
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db0.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		db1, err := c.Get(ctx, b.tenants[1])
		if err == nil {
			qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err = db1.ExecContext(qctx, "SELECT 1")
			cancel()
		}
		if !errors.Is(err, sqladapter.ErrBudgetWait) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("query with the budget held = %v; want ErrBudgetWait and DeadlineExceeded", err)
		}
		conn.Close()
		if st := sqladapter.PoolBudget(c); st.Waiting != 0 || st.Held > 1 {
			t.Errorf("PoolBudget after the wait = %+v; want Waiting 0, Held <= 1", st)
		}
	})
}

// checkServerRoom fails when the server has no room for the tests'
// budget plus outside connections.
func checkServerRoom(b *backend) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var max, used int
	var err error
	switch b.name {
	case "postgres":
		err = b.admin.QueryRowContext(ctx, "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int, (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')").Scan(&max, &used)
	case "mysql":
		err = b.admin.QueryRowContext(ctx, "SELECT @@max_connections, (SELECT count(*) FROM information_schema.processlist)").Scan(&max, &used)
	}
	if err != nil {
		return err
	}
	if free := max - used; free < testBudget+5 {
		return fmt.Errorf("%s has %d free connections; the test needs %d", b.name, free, testBudget+5)
	}
	return nil
}

// outsideConnect opens a fresh connection to b's server, as another
// client would.
func outsideConnect(b *backend) error {
	db, err := sql.Open(b.driver, b.adminDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}
