package pgxadapter

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkQuery is a query on a found tenant: through the cache (a lease
// on the tenant's pool, the query, the release) against the same query on
// a bare pgxpool.Pool, in the same run. It needs RESCACHE_POSTGRES_DSN.
func BenchmarkQuery(b *testing.B) {
	dsn := postgresDSN(b)
	ctx := context.Background()
	b.Run("pgxpool", func(b *testing.B) {
		p, err := pgxpool.New(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		var one int
		for b.Loop() {
			if err := p.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, budget := range []int{0, 10} {
		name := "pgxadapter"
		if budget > 0 {
			name += "+MaxTotalConns"
		}
		b.Run(name, func(b *testing.B) {
			c, err := New(Options[string]{
				MaxTotalConns: budget,
				Config:        func(ctx context.Context, _ string) (*pgxpool.Config, error) { return pgxpool.ParseConfig(dsn) },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var one int
			for b.Loop() {
				l, err := c.Lease(ctx, "tenant")
				if err != nil {
					b.Fatal(err)
				}
				err = l.Value().QueryRow(ctx, "SELECT 1").Scan(&one)
				l.Release()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
