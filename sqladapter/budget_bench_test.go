package sqladapter_test

import (
	"context"
	"testing"

	"github.com/rescache/rescache/sqladapter"
)

// BenchmarkQueryIdleConn measures a query that finds an idle connection in
// its tenant's pool, without a budget and with one (MaxTotalConns 64): the
// budget's cost on the path every query takes. The fake driver answers at
// once, so the figure is the wrapper's whole cost. Compare with
//
//	go test -run '^$' -bench QueryIdleConn -count 6 ./sqladapter | benchstat -col /budget -
func BenchmarkQueryIdleConn(b *testing.B) {
	for _, bc := range []struct {
		name string
		max  int
	}{{"off", 0}, {"on", 64}} {
		b.Run("budget="+bc.name, func(b *testing.B) {
			srv := newFakeServer(b.Name())
			c, err := sqladapter.New(sqladapter.Options[string]{
				Driver:        fakeDriverName,
				DSN:           func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil },
				MaxTotalConns: bc.max,
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
			var got string
			b.ReportAllocs()
			for b.Loop() {
				if err := db.QueryRowContext(ctx, "SELECT server").Scan(&got); err != nil {
					b.Fatal(err)
				}
			}
			if n := srv.connects.Load(); n != 1 {
				b.Fatalf("%d connects; want 1, every query on the idle connection", n)
			}
		})
	}
}
