package promcollector_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
)

// tenantConfig stands for an expensive per-tenant resource.
type tenantConfig struct{ tenant string }

func (*tenantConfig) Close() error { return nil }

// Export a cache's statistics on /metrics.
func Example() {
	cache, err := rescache.New(func(ctx context.Context, tenant string) (*tenantConfig, error) {
		return &tenantConfig{tenant: tenant}, nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New("tenants", cache))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// http.ListenAndServe(":9090", mux)

	ctx := context.Background()
	for _, tenant := range []string{"acme", "acme", "globex", "acme"} {
		cache.Get(ctx, tenant)
	}
	cache.Invalidate("globex")

	// Scrape /metrics and show some of its lines.
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		for _, name := range []string{"rescache_hits_total", "rescache_misses_total", "rescache_entries", "rescache_evictions_total"} {
			if strings.HasPrefix(line, name+"{") {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// rescache_entries{cache="tenants"} 1
	// rescache_evictions_total{cache="tenants",reason="capacity"} 0
	// rescache_evictions_total{cache="tenants",reason="closed"} 0
	// rescache_evictions_total{cache="tenants",reason="discarded"} 0
	// rescache_evictions_total{cache="tenants",reason="idle"} 0
	// rescache_evictions_total{cache="tenants",reason="invalidated"} 1
	// rescache_evictions_total{cache="tenants",reason="lifetime"} 0
	// rescache_evictions_total{cache="tenants",reason="replaced"} 0
	// rescache_evictions_total{cache="tenants",reason="unhealthy"} 0
	// rescache_hits_total{cache="tenants"} 2
	// rescache_misses_total{cache="tenants"} 2
}

// Export the connection pools of a cache of one *sql.DB per tenant, summed
// over tenants (the default), because there are many of them.
func ExampleNewSQLPools() {
	dir, err := os.MkdirTemp("", "tenants")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	cache, err := rescache.New(func(ctx context.Context, tenant string) (*sql.DB, error) {
		return sql.Open("sqlite", filepath.Join(dir, tenant+".db"))
	}, &rescache.Options[string, *sql.DB]{MaxEntries: 10_000})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		promcollector.New("tenants", cache),
		promcollector.NewSQLPools("tenants", cache, nil), // summed: the default
	)

	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "initech"} {
		db, err := cache.Get(ctx, tenant)
		if err != nil {
			log.Fatal(err)
		}
		if err := db.PingContext(ctx); err != nil { // opens one connection
			log.Fatal(err)
		}
	}

	n, err := testutil.GatherAndCount(reg, "rescache_sql_open_connections")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("series:", n)
	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "rescache_sql_idle_connections" {
			fmt.Println("idle connections:", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	// Output:
	// series: 1
	// idle connections: 3
}
