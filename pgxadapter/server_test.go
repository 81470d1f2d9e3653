package pgxadapter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rescache/rescache"
)

// serverConns counts the connections of application_name app on the
// server.
func serverConns(t *testing.T, admin *pgx.Conn, app string) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func adminConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func configFor(dsn, app string, maxConns int32) func(context.Context, string) (*pgxpool.Config, error) {
	return func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		if maxConns > 0 {
			cfg.MaxConns = maxConns
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		return cfg, nil
	}
}

// Concurrent first calls for a tenant share one build: one pool, whose
// connections are all the server sees.
func TestOnePoolPerTenantUnderConcurrentFirstUse(t *testing.T) {
	dsn := postgresDSN(t)
	app := appName()
	admin := adminConn(t, dsn)
	c, err := New(Options[string]{Config: configFor(dsn, app, 4)})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	var wg sync.WaitGroup
	pools := make(chan *pgxpool.Pool, 20)
	for range 20 {
		wg.Go(func() {
			l, err := c.Lease(context.Background(), "acme")
			if err != nil {
				t.Error(err)
				return
			}
			pools <- l.Value()
			l.Release()
		})
	}
	wg.Wait()
	close(pools)
	first := <-pools
	for p := range pools {
		if p != first {
			t.Fatal("concurrent first calls got different pools")
		}
	}
	if s := c.Stats(); s.Builds != 1 {
		t.Errorf("%d builds for one tenant under concurrent first use; want 1", s.Builds)
	}
	if n, total := serverConns(t, admin, app), first.Stat().TotalConns(); n != int(total) || n < 1 {
		t.Errorf("the server sees %d connections of the tenant; its one pool holds %d", n, total)
	}
}

// A failed build (a database that does not exist) leaves no connection on
// the server, and its error holds no password.
func TestFailedBuildLeavesNoConnection(t *testing.T) {
	dsn := postgresDSN(t)
	app := appName()
	admin := adminConn(t, dsn)
	c, err := New(Options[string]{Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.Database = "rescache_no_such_db_" + tenant
		cfg.ConnConfig.Password = "Sekr1tPw"
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		return cfg, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	_, err = c.Get(context.Background(), "nope")
	var e *Error
	if !errors.As(err, &e) || e.Op != "ping" {
		t.Fatalf("Get of a tenant whose database does not exist: %v; want a ping *Error", err)
	}
	if strings.Contains(err.Error(), "Sekr1tPw") {
		t.Errorf("the error holds the password: %v", err)
	}
	if n := serverConns(t, admin, app); n != 0 {
		t.Errorf("%d connections of the failed build on the server; want 0", n)
	}
}

// A pool whose backends were terminated (pg_terminate_backend on every
// connection of the tenant) fails its health check and leaves the cache;
// the next call builds a new pool.
func TestHealthCheckEvictsTerminatedPool(t *testing.T) {
	dsn := postgresDSN(t)
	app := appName()
	admin := adminConn(t, dsn)
	c, err := New(Options[string]{
		Config:      configFor(dsn, app, 2),
		HealthCheck: true,
		Cache:       rescache.Options[string, *pgxpool.Pool]{HealthCheckInterval: 50 * time.Millisecond, HealthCheckTimeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	ctx := context.Background()
	old, err := c.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); c.Stats().EvictionsByReason[rescache.EvictUnhealthy] == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the terminated pool was not evicted within 10s: %+v", c.Stats())
		}
		time.Sleep(20 * time.Millisecond) // bounded polling of a real server
	}
	cur, err := c.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if cur == old {
		t.Error("the unhealthy pool is still the tenant's")
	}
	var one int
	if err := cur.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Errorf("a query on the new pool: %v", err)
	}
}

// A caller waiting for a place whose ctx ends gets its error at once and
// holds nothing; the build it started goes on and gets the place when one
// comes free (TestMain's goleak checks no goroutine is left).
func TestBudgetWaiterWhoseContextEnds(t *testing.T) {
	dsn := postgresDSN(t)
	c, err := New(Options[string]{Config: configFor(dsn, appName(), 2), MaxTotalConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	ctx := context.Background()
	l, err := c.Lease(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := l.Value().Acquire(ctx) // the budget's only place is in use
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Get(short, "b")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get with the budget full: %v; want the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Get returned after %v; want at its deadline", d)
	}
	// b's build goes on without its caller (a build outlives the ctx of
	// the caller that started it): it gets the place once a's connection
	// is back, closed rather than kept idle since a place is awaited.
	conn.Release()
	l.Release()
	for deadline := time.Now().Add(10 * time.Second); ; {
		b := PoolBudget(c)
		if _, ok := c.Peek("b"); ok && b.Waiting == 0 && b.Held <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the place came free: %+v, b cached: %v", b, c.Len())
		}
		time.Sleep(10 * time.Millisecond) // bounded polling of a real server
	}
}

// Refresh swaps a tenant's pool under load with no failed query: the old
// pool serves its leases to the end and closes after them.
func TestRefreshUnderLoad(t *testing.T) {
	dsn := postgresDSN(t)
	c, err := New(Options[string]{Config: configFor(dsn, appName(), 4)})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	var queries, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				l, err := c.Lease(ctx, "acme")
				if err == nil {
					var one int
					err = l.Value().QueryRow(ctx, "SELECT 1").Scan(&one)
					l.Release()
				}
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				queries.Add(1)
			}
		})
	}
	for range 5 {
		time.Sleep(100 * time.Millisecond) // the load runs between refreshes
		if err := c.Refresh(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	s := c.Stats()
	t.Logf("%d queries, %d failed, across %d refreshes (%d pools closed)", queries.Load(), failed.Load(), s.Refreshes, s.Closes)
	if failed.Load() != 0 {
		t.Errorf("%d queries failed while the pool was refreshed", failed.Load())
	}
	if s.Refreshes != 5 || s.EvictionsByReason[rescache.EvictReplaced] != 5 {
		t.Errorf("Refreshes %d, replaced %d; want 5, 5", s.Refreshes, s.EvictionsByReason[rescache.EvictReplaced])
	}
}
