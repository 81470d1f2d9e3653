package pgxadapter_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/pgxadapter"
)

// One pgxpool.Pool per tenant database, at most 80 connections to the
// server for all of them, at most 500 pools open, a pool closed after ten
// idle minutes. (It needs a PostgreSQL with the tenants' databases, so the
// example is compiled, not run.)
func ExampleNew() {
	tenants, err := pgxadapter.New(pgxadapter.Options[string]{
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
			cfg, err := pgxpool.ParseConfig("postgres://app@db.internal:5432/tenant_" + tenant)
			if err != nil {
				return nil, err
			}
			cfg.MaxConns = 10
			return cfg, nil
		},
		MaxTotalConns: 80,
		HealthCheck:   true,
		Cache:         rescache.Options[string, *pgxpool.Pool]{MaxEntries: 500, IdleTimeout: 10 * time.Minute},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Shutdown(context.Background())

	ctx := context.Background()
	l, err := tenants.Lease(ctx, "acme")
	if err != nil {
		log.Fatal(err) // a *pgxadapter.Error: tenant, step and cause, no password
	}
	defer l.Release() // the pool stays open until then, even if evicted meanwhile
	var notes int
	if err := l.Value().QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&notes); err != nil {
		log.Fatal(err)
	}
	fmt.Println("acme has", notes, "notes")
}
