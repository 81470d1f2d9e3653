package sqladapter_test

import (
	"context"
	"database/sql/driver"
	"testing"

	"github.com/rescache/rescache/sqladapter"
)

// BenchmarkPickIdleConn measures a query that finds an idle connection
// under each pick, without and with a budget: the cost of the
// LeastRecentlyUsed queue (a take, a session reset, a put and a wrapper per
// query) next to database/sql's free list. Compare with
//
//	go test -run '^$' -bench PickIdleConn -count 6 ./sqladapter | benchstat -col /pick -
func BenchmarkPickIdleConn(b *testing.B) {
	for _, budget := range []int{0, 64} {
		for _, pick := range []sqladapter.Pick{sqladapter.MostRecentlyUsed, sqladapter.LeastRecentlyUsed} {
			name := "budget=off"
			if budget > 0 {
				name = "budget=on"
			}
			b.Run(name+"/pick="+pick.String(), func(b *testing.B) {
				d := newPickDriver(nil)
				c, err := sqladapter.New(sqladapter.Options[string]{
					Connector:     func(context.Context, string) (driver.Connector, error) { return d, nil },
					Pool:          func(string) sqladapter.PoolSettings { return sqladapter.PoolSettings{Pick: pick} },
					MaxTotalConns: budget,
				})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				ctx := context.Background()
				db, err := c.Get(ctx, "acme")
				if err != nil {
					b.Fatal(err)
				}
				var id int
				b.ReportAllocs()
				for b.Loop() {
					if err := db.QueryRowContext(ctx, "SELECT id").Scan(&id); err != nil {
						b.Fatal(err)
					}
				}
				if n := d.connects.Load(); n != 1 {
					b.Fatalf("%d connects; want 1, every query on the idle connection", n)
				}
			})
		}
	}
}
