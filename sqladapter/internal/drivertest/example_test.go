package drivertest_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// One SQLite database per tenant, each opened on first use and shared by
// later requests; a request holds a lease while it runs its queries. The
// program imports its driver, here modernc.org/sqlite (registered as
// "sqlite").
func Example() {
	dir, err := os.MkdirTemp("", "tenants")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	tenants, err := sqladapter.New(sqladapter.Options[string]{
		Driver: "sqlite",
		DSN: func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(dir, tenant+".db"), nil
		},
		// Init runs once per pool, before it is cached.
		Init: func(ctx context.Context, _ string, db *sql.DB) error {
			_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS notes (body TEXT)")
			return err
		},
		Cache: rescache.Options[string, *sql.DB]{MaxEntries: 100, IdleTimeout: 10 * time.Minute},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	// A request: a lease on the tenant's pool for the span of its
	// queries, released when it returns.
	addNote := func(ctx context.Context, tenant string) (notes int, err error) {
		l, err := tenants.Lease(ctx, tenant)
		if err != nil {
			return 0, err
		}
		defer l.Release()
		db := l.Value()
		if _, err := db.ExecContext(ctx, "INSERT INTO notes VALUES (?)", "hello from "+tenant); err != nil {
			return 0, err
		}
		err = db.QueryRowContext(ctx, "SELECT count(*) FROM notes").Scan(&notes)
		return notes, err
	}

	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "acme"} {
		n, err := addNote(ctx, tenant)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s has %d notes\n", tenant, n)
	}
	fmt.Println("pools opened:", tenants.Stats().Builds)
	// Output:
	// acme has 1 notes
	// globex has 1 notes
	// acme has 2 notes
	// pools opened: 2
}

// Per-tenant pool limits: a large tenant gets 50 connections, a trial
// tenant 2, everyone else the defaults.
func Example_pool() {
	dir, err := os.MkdirTemp("", "tenants")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	tenants, err := sqladapter.New(sqladapter.Options[string]{
		Driver: "sqlite",
		DSN: func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(dir, tenant+".db"), nil
		},
		Pool: func(tenant string) sqladapter.PoolSettings {
			switch tenant {
			case "bigcorp":
				return sqladapter.PoolSettings{MaxOpenConns: 50, MaxIdleConns: 10}
			case "trial":
				return sqladapter.PoolSettings{MaxOpenConns: 2}
			default:
				return sqladapter.PoolSettings{} // every field zero: DefaultPoolSettings
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	for _, tenant := range []string{"bigcorp", "trial", "acme"} {
		db, err := tenants.Get(context.Background(), tenant)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: at most %d connections\n", tenant, db.Stats().MaxOpenConnections)
	}
	// Output:
	// bigcorp: at most 50 connections
	// trial: at most 2 connections
	// acme: at most 10 connections
}

func Example_redactDSN() {
	fmt.Println(sqladapter.RedactDSN("postgres://app:s3cret@db:5432/acme?sslmode=require"))
	fmt.Println(sqladapter.RedactDSN("host=db user=app password='s3 cret' dbname=acme"))
	fmt.Println(sqladapter.RedactDSN("app:s3cret@tcp(db:3306)/acme?parseTime=true"))
	// Output:
	// postgres://app:xxxxx@db:5432/acme?sslmode=require
	// host=db user=app password=xxxxx dbname=acme
	// app:xxxxx@tcp(db:3306)/acme?parseTime=true
}

// PoolStats reads the connection figures of every open tenant pool, for a
// status page or a metrics collector, without counting as a use.
func Example_poolStats() {
	dir, err := os.MkdirTemp("", "tenants")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tenants, err := sqladapter.New(sqladapter.Options[string]{
		Driver: "sqlite",
		DSN: func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(dir, tenant+".db"), nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := tenants.Get(context.Background(), tenant); err != nil {
			log.Fatal(err)
		}
	}

	stats := sqladapter.PoolStats(tenants)
	for _, tenant := range []string{"acme", "globex"} {
		s := stats[tenant]
		fmt.Printf("%s: %d open (%d idle), at most %d\n", tenant, s.OpenConnections, s.Idle, s.MaxOpenConnections)
	}
	// Output:
	// acme: 1 open (1 idle), at most 10
	// globex: 1 open (1 idle), at most 10
}
