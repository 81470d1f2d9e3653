package drivertest_test

import (
	"context"
	"testing"

	"github.com/rescache/rescache/sqladapter"
)

// BenchmarkPickQuery runs "SELECT 1" on a tenant whose pool has an idle
// connection under each pick, on every backend: the cost of
// LeastRecentlyUsed next to a real round trip (its session reset is the
// driver's: pgx pings a connection idle for over a second, which a query
// loop never leaves it).
//
//	go test -run '^$' -bench PickQuery -count 6 ./sqladapter/internal/drivertest | benchstat -col /pick -
func BenchmarkPickQuery(b *testing.B) {
	for _, be := range backends(b) {
		for _, pick := range []sqladapter.Pick{sqladapter.MostRecentlyUsed, sqladapter.LeastRecentlyUsed} {
			b.Run(be.name+"/pick="+pick.String(), func(b *testing.B) {
				c, err := sqladapter.New(sqladapter.Options[string]{
					Driver: be.driver,
					DSN:    func(_ context.Context, tenant string) (string, error) { return be.dsn(tenant), nil },
					Pool:   func(string) sqladapter.PoolSettings { return sqladapter.PoolSettings{Pick: pick} },
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
