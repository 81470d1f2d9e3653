package promcollector_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
	"github.com/rescache/rescache/sqladapter"
)

func TestSQLBudget(t *testing.T) {
	dir := t.TempDir()
	newCache := func(max int) *rescache.Cache[string, *sql.DB] {
		c, err := sqladapter.New(sqladapter.Options[string]{
			Driver:        "sqlite",
			DSN:           func(_ context.Context, tenant string) (string, error) { return filepath.Join(dir, tenant+".db"), nil },
			MaxTotalConns: max,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := newCache(2)
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "initech"} {
		if _, err := c.Get(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	// Three tenants with one idle connection each, in a budget of two: the
	// third reclaimed the first one's.
	want := `
# HELP rescache_sql_budget_held_connections Connections open in all pools, draining pools included.
# TYPE rescache_sql_budget_held_connections gauge
rescache_sql_budget_held_connections{cache="tenants"} 2
# HELP rescache_sql_budget_max_connections Size of the connection budget of all pools.
# TYPE rescache_sql_budget_max_connections gauge
rescache_sql_budget_max_connections{cache="tenants"} 2
# HELP rescache_sql_budget_reclaimed_total Idle connections of other tenants closed to make room.
# TYPE rescache_sql_budget_reclaimed_total counter
rescache_sql_budget_reclaimed_total{cache="tenants"} 1
`
	col := promcollector.NewSQLBudget("tenants", c)
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"rescache_sql_budget_held_connections", "rescache_sql_budget_max_connections", "rescache_sql_budget_reclaimed_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(promcollector.NewSQLBudget("none", newCache(0))); n != 0 {
		t.Errorf("a cache without a budget reports %d series; want 0", n)
	}
}
