package pgxadapter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rescache/rescache"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// envPostgres points the server tests at a PostgreSQL (CI sets it). Without
// it they skip, saying so; the unit tests run anyway.
const envPostgres = "RESCACHE_POSTGRES_DSN"

func postgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		tb.Skipf("%s is not set: this test needs a PostgreSQL", envPostgres)
	}
	return dsn
}

// appName returns an application_name of the test's own, by which the
// test counts its connections on the server.
func appName() string {
	return fmt.Sprintf("pgxadapter-%d", rand.Int64())
}

func shutdown(t *testing.T, c *rescache.Cache[string, *pgxpool.Pool]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestOptionsValidated(t *testing.T) {
	cfg := func(context.Context, string) (*pgxpool.Config, error) { return nil, nil }
	for _, tc := range []struct {
		o    Options[string]
		want string
	}{
		{Options[string]{}, "Config is nil"},
		{Options[string]{Config: cfg, MaxTotalConns: -1}, "MaxTotalConns is -1"},
		{Options[string]{Config: cfg, PingTimeout: -time.Second}, "PingTimeout is -1s"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New = %v; want an error saying %q", err, tc.want)
		}
	}
}

// A failed build names the tenant and the step, and masks the password.
func TestBuildErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close() // nothing listens there now
	const secret = "Sekr1t/Pw"
	c, err := New(Options[string]{
		PingTimeout: time.Second,
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
			switch tenant {
			case "config-fails":
				return nil, errors.New("no such tenant")
			case "config-panics":
				panic("config panicked for " + tenant)
			}
			cfg, err := pgxpool.ParseConfig("postgres://app:" + strings.ReplaceAll(secret, "/", "%2F") + "@" + closedAddr + "/db?connect_timeout=1")
			if err != nil {
				return nil, err
			}
			if tenant == "hook-says-password" {
				cfg.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
					return fmt.Errorf("refusing to connect with password %s", secret)
				}
			}
			return cfg, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	ctx := context.Background()
	for _, tc := range []struct{ tenant, op string }{
		{"config-fails", "config"}, {"config-panics", "config"}, {"unreachable", "ping"}, {"hook-says-password", "ping"},
	} {
		_, err := c.Get(ctx, tc.tenant)
		var e *Error
		if !errors.As(err, &e) || e.Op != tc.op || e.Tenant != tc.tenant {
			t.Errorf("%s: %v; want an *Error of step %q", tc.tenant, err, tc.op)
			continue
		}
		if strings.Contains(err.Error(), "Sekr1t") {
			t.Errorf("%s: the error holds the password: %v", tc.tenant, err)
		}
		if tc.tenant == "config-panics" {
			var pe *rescache.PanicError
			if !errors.As(err, &pe) {
				t.Errorf("%s: %v; want it to unwrap to a *rescache.PanicError", tc.tenant, err)
			}
		}
	}
	if s := c.Stats(); s.Entries != 0 {
		t.Errorf("%d entries after failed builds; want none", s.Entries)
	}
}

// The pools query the server; PoolStats and the budget's figures say so.
func TestPoolsServeAndReport(t *testing.T) {
	dsn := postgresDSN(t)
	app := appName()
	var connected atomic.Int32
	c, err := New(Options[string]{
		MaxTotalConns: 4,
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				return nil, err
			}
			cfg.ConnConfig.RuntimeParams["application_name"] = app
			cfg.AfterConnect = func(context.Context, *pgx.Conn) error { connected.Add(1); return nil } // kept by the adapter
			return cfg, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	ctx := context.Background()
	for _, tenant := range []string{"a", "b"} {
		l, err := c.Lease(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		var one int
		if err := l.Value().QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Errorf("%s: SELECT 1 = %d, %v", tenant, one, err)
		}
		l.Release()
	}
	if n := connected.Load(); n == 0 {
		t.Error("the caller's AfterConnect was not called")
	}
	st := PoolStats(c)
	if len(st) != 2 || st["a"].TotalConns() < 1 {
		t.Errorf("PoolStats = %v; want two pools with connections", st)
	}
	if b := PoolBudget(c); b.Max != 4 || b.Held < 2 || b.Held > 4 {
		t.Errorf("PoolBudget = %+v; want Max 4 and the 2 to 4 connections open", b)
	}
	ds := DBStats(c)
	if len(ds) != 2 || ds["a"].OpenConnections != int(st["a"].TotalConns()) || ds["a"].MaxOpenConnections != int(st["a"].MaxConns()) || ds["a"].InUse != 0 {
		t.Errorf("DBStats = %+v; want the pgxpool figures of two idle pools", ds)
	}
}

// Under concurrent queries over many tenants, the connections open on the
// server (counted in pg_stat_activity) never exceed MaxTotalConns.
func TestBudgetHoldsUnderLoad(t *testing.T) {
	dsn := postgresDSN(t)
	app := appName()
	const budgetSize = 5
	// RESCACHE_PGX_NO_BUDGET=1 runs the same load without a budget, to
	// measure what the budget prevents: the figures are logged and the
	// bound is not asserted.
	noBudget := os.Getenv("RESCACHE_PGX_NO_BUDGET") == "1"
	maxTotal := budgetSize
	if noBudget {
		maxTotal = 0
	}
	c, err := New(Options[string]{
		MaxTotalConns: maxTotal,
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				return nil, err
			}
			cfg.MaxConns = 4
			cfg.ConnConfig.RuntimeParams["application_name"] = app
			return cfg, nil
		},
		Cache: rescache.Options[string, *pgxpool.Pool]{MaxEntries: 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	admin, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	stop := make(chan struct{})
	var peak, samples, outsideFails int
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err == nil {
				samples++
				peak = max(peak, n)
			}
			// An outside client always gets a connection.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if oc, err := pgx.Connect(ctx, dsn); err != nil {
				outsideFails++
			} else {
				oc.Close(ctx)
			}
			cancel()
			time.Sleep(100 * time.Millisecond) // the sampling period (a real server: no fake time)
		}
	})
	var wg sync.WaitGroup
	var queries, failed atomic.Int64
	const tenants = 200
	deadline := time.Now().Add(3 * time.Second)
	for w := range 16 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				tenant := fmt.Sprint("t", (w*7+int(queries.Load()))%tenants)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				l, err := c.Lease(ctx, tenant)
				if err == nil {
					_, err = l.Value().Exec(ctx, "SELECT pg_sleep(0.005)")
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
	wg.Wait()
	close(stop)
	sampler.Wait()
	t.Logf("%d queries over %d tenants (50 cached), %d failed; at most %d connections on the server (%d samples every 100ms), budget %d; outside connection failures %d", queries.Load(), tenants, failed.Load(), peak, samples, budgetSize, outsideFails)
	if outsideFails > 0 {
		t.Errorf("%d outside connections failed during the load", outsideFails)
	}
	if noBudget {
		t.Logf("without a budget: at most %d connections on the server", peak)
		return
	}
	if peak > budgetSize {
		t.Errorf("%d connections on the server; MaxTotalConns is %d", peak, budgetSize)
	}
	if failed.Load() > 0 {
		t.Errorf("%d queries failed", failed.Load())
	}
}

// A pool evicted while leased keeps serving its lease, and closes once
// the lease is released: pool.Close waits for connections acquired from
// it, and the cache closes a leased pool only at its last release.
func TestEvictionClosesAfterLastLease(t *testing.T) {
	dsn := postgresDSN(t)
	c, err := New(Options[string]{
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) { return pgxpool.ParseConfig(dsn) },
		Cache:  rescache.Options[string, *pgxpool.Pool]{MaxEntries: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, c)
	ctx := context.Background()
	l, err := c.Lease(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	pool := l.Value()
	if _, err := c.Get(ctx, "b"); err != nil { // evicts a
		t.Fatal(err)
	}
	if _, ok := c.Peek("a"); ok {
		t.Fatal("a is still cached after b's build with MaxEntries 1")
	}
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Errorf("a query on the evicted, leased pool: %v", err)
	}
	l.Release()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := pool.Ping(ctx); err != nil && strings.Contains(err.Error(), "closed pool") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the evicted pool is not closed 5s after its last lease")
		}
		time.Sleep(10 * time.Millisecond) // bounded polling
	}
}
