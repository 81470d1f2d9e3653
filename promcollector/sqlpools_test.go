package promcollector_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
	_ "modernc.org/sqlite"
)

// newTenantDBs returns a cache of one SQLite database per tenant, in files
// under a temporary directory, each pool limited to one connection so that
// a test can make callers wait. The cache is closed when the test ends.
func newTenantDBs(t *testing.T) *rescache.Cache[string, *sql.DB] {
	t.Helper()
	dir := t.TempDir()
	cache, err := rescache.New(func(ctx context.Context, tenant string) (*sql.DB, error) {
		db, err := sql.Open("sqlite", filepath.Join(dir, tenant+".db"))
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, err
		}
		return db, nil
	}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { cache.Close() })
	return cache
}

// waitOnce makes one caller wait for tenant's single connection and give
// up: the pool's WaitCount grows by one and its WaitDuration by the
// time it waited. It returns the connection it held, still held.
func waitOnce(t *testing.T, cache *rescache.Cache[string, *sql.DB], tenant string, held *sql.Conn) *sql.Conn {
	t.Helper()
	ctx := context.Background()
	db, err := cache.Get(ctx, tenant)
	if err != nil {
		t.Fatalf("Get(%q) = %v; want no error", tenant, err)
	}
	if held == nil {
		if held, err = db.Conn(ctx); err != nil {
			t.Fatalf("%s: Conn: %v", tenant, err)
		}
	}
	// Give up once the pool has queued the wait (database/sql counts it
	// then), not after a fixed deadline: a context that expired before
	// Conn looked at it (a loaded machine) would return at once, counted
	// as no wait.
	before := db.Stats().WaitCount
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := db.Conn(wctx)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	for db.Stats().WaitCount == before {
		select {
		case err := <-done:
			t.Fatalf("%s: Conn with the only connection held = %v before it waited; want it to wait", tenant, err)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("%s: Conn with the only connection held = %v; want %v", tenant, err, context.Canceled)
	}
	return held
}

// TestSQLPools runs the SQL pool collector, with and without the tenant
// label, over SQLite pools that are opened, waited on, evicted and opened
// again, and scrapes both over HTTP.
func TestSQLPools(t *testing.T) {
	cache := newTenantDBs(t)
	ctx := context.Background()

	perTenant := prometheus.NewRegistry()
	perTenant.MustRegister(promcollector.NewSQLPools("db", cache, &promcollector.SQLPoolOptions[string]{Tenant: true}))
	summed := prometheus.NewRegistry()
	summed.MustRegister(promcollector.NewSQLPools("db", cache, nil))
	perTenantURL, summedURL := serveMetrics(t, perTenant), serveMetrics(t, summed)

	// check compares the scrape with want, apart from the wait duration
	// series, which must be positive exactly where the wait count is.
	check := func(step, url string, want map[string]float64) {
		t.Helper()
		got := scrape(t, url, "db")
		for k, g := range got {
			if dk, ok := durationKey(k); ok {
				if g < 0 || (g > 0) != (want[dk] > 0) {
					t.Errorf("%s: %s = %v; want > 0 exactly when %s (%v) is", step, k, g, dk, want[dk])
				}
				continue
			}
			if w, ok := want[k]; !ok {
				t.Errorf("%s: unexpected series %s = %v", step, k, g)
			} else if g != w {
				t.Errorf("%s: %s = %v; want %v", step, k, g, w)
			}
		}
		for k := range want {
			if _, ok := got[k]; !ok {
				t.Errorf("%s: %s missing from the scrape", step, k)
			}
		}
	}

	for _, tenant := range []string{"acme", "globex"} {
		if _, err := cache.Get(ctx, tenant); err != nil {
			t.Fatalf("Get(%q) = %v; want no error", tenant, err)
		}
	}
	held := waitOnce(t, cache, "acme", nil)
	check("acme busy", perTenantURL, merge(
		pool("acme", 1, 1, 0, 1),
		pool("globex", 1, 0, 1, 0),
	))
	check("acme busy", summedURL, pool("", 2, 1, 1, 1))

	held.Close()
	cache.Invalidate("acme") // closes acme's pool, and its counters
	check("acme evicted", perTenantURL, pool("globex", 1, 0, 1, 0))
	check("acme evicted", summedURL, pool("", 1, 0, 1, 1))

	held = waitOnce(t, cache, "acme", nil) // a fresh pool for acme
	held = waitOnce(t, cache, "acme", held)
	check("acme reopened", perTenantURL, merge(
		pool("acme", 1, 1, 0, 2), // its counters restarted with the new pool
		pool("globex", 1, 0, 1, 0),
	))
	check("acme reopened", summedURL, pool("", 2, 1, 1, 3))

	held.Close()
	if err := cache.Close(); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	check("cache closed", perTenantURL, map[string]float64{})
	check("cache closed", summedURL, pool("", 0, 0, 0, 3))
}

// pool returns the series the SQL pool collector reports for one tenant,
// or for the sum when tenant is "", with the given gauges and wait count
// and no connections closed by the pool's limits.
func pool(tenant string, open, inUse, idle, waits float64) map[string]float64 {
	label := ""
	if tenant != "" {
		label = `{tenant="` + tenant + `"}`
	}
	return map[string]float64{
		"rescache_sql_open_connections" + label:           open,
		"rescache_sql_in_use_connections" + label:         inUse,
		"rescache_sql_idle_connections" + label:           idle,
		"rescache_sql_wait_count_total" + label:           waits,
		"rescache_sql_max_idle_closed_total" + label:      0,
		"rescache_sql_max_idle_time_closed_total" + label: 0,
		"rescache_sql_max_lifetime_closed_total" + label:  0,
	}
}

// durationKey reports whether k is a wait duration series and returns the
// key of the wait count series with the same labels.
func durationKey(k string) (string, bool) {
	const d, c = "rescache_sql_wait_duration_seconds_total", "rescache_sql_wait_count_total"
	if len(k) < len(d) || k[:len(d)] != d {
		return "", false
	}
	return c + k[len(d):], true
}

func merge(ms ...map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// NewSQLPoolsFunc reports the figures its function returns, in the same
// series as NewSQLPools (here as pgxadapter.DBStats would give them).
func TestSQLPoolsFunc(t *testing.T) {
	stats := map[string]sql.DBStats{
		"acme":   {OpenConnections: 3, InUse: 1, Idle: 2, WaitCount: 4},
		"globex": {OpenConnections: 1, Idle: 1},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.NewSQLPoolsFunc("pgx", func() map[string]sql.DBStats { return stats }, &promcollector.SQLPoolOptions[string]{Tenant: true}))
	got := scrape(t, serveMetrics(t, reg), "pgx")
	for k, want := range map[string]float64{
		`rescache_sql_open_connections{tenant="acme"}`:   3,
		`rescache_sql_in_use_connections{tenant="acme"}`: 1,
		`rescache_sql_idle_connections{tenant="globex"}`: 1,
		`rescache_sql_wait_count_total{tenant="acme"}`:   4,
	} {
		if got[k] != want {
			t.Errorf("%s = %v; want %v (scrape: %v)", k, got[k], want, got)
		}
	}
}
