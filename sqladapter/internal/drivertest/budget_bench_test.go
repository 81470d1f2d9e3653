package drivertest_test

import (
	"context"
	"testing"

	"github.com/rescache/rescache/sqladapter"
)

// BenchmarkBudgetQuery runs "SELECT 1" on a tenant whose pool has an idle
// connection, without a budget and with one, on every backend: the budget's
// cost next to a real round trip.
//
//	go test -run '^$' -bench BudgetQuery -count 6 ./sqladapter/internal/drivertest | benchstat -col /budget -
func BenchmarkBudgetQuery(b *testing.B) {
	for _, be := range backends(b) {
		for _, bc := range []struct {
			name string
			max  int
		}{{"off", 0}, {"on", 64}} {
			b.Run(be.name+"/budget="+bc.name, func(b *testing.B) {
				c, err := sqladapter.New(sqladapter.Options[string]{
					Driver:        be.driver,
					DSN:           func(_ context.Context, tenant string) (string, error) { return be.dsn(tenant), nil },
					MaxTotalConns: bc.max,
				})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				ctx := context.Background()
				db, err := c.Get(ctx, be.tenants[0])
				if err != nil {
					b.Fatal(err)
				}
				var one int
				b.ReportAllocs()
				for b.Loop() {
					if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
