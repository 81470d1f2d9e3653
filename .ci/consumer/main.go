// Command consumer is the program of the consumer test (.ci/consumer.sh):
// a module outside the repository that installs rescache's modules from a
// module proxy and uses the core with sqladapter on SQLite, and the
// exporters. It prints one line per tenant and the metric families.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/budget/redisbudget"
	"github.com/rescache/rescache/otelmetrics"
	"github.com/rescache/rescache/pgxadapter"
	"github.com/rescache/rescache/promcollector"
	"github.com/rescache/rescache/redisadapter"
	"github.com/rescache/rescache/sqladapter"
	"go.opentelemetry.io/otel/metric/noop"
	_ "modernc.org/sqlite"
)

func main() {
	dir, err := os.MkdirTemp("", "consumer")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	tenants, err := sqladapter.New(sqladapter.Options[string]{
		Driver: "sqlite",
		DSN: func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(dir, tenant+".db"), nil
		},
		Cache: rescache.Options[string, *sql.DB]{MaxEntries: 10},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "acme"} {
		db, release, err := tenants.Acquire(ctx, tenant)
		if err != nil {
			log.Fatal(err)
		}
		var n int
		_, err = db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS notes (body TEXT)")
		if err == nil {
			_, err = db.ExecContext(ctx, "INSERT INTO notes VALUES (?)", "hello from "+tenant)
		}
		if err == nil {
			err = db.QueryRowContext(ctx, "SELECT count(*) FROM notes").Scan(&n)
		}
		release()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s has %d notes\n", tenant, n)
	}
	fmt.Println("pools opened:", tenants.Stats().Builds)

	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New("tenants", tenants), promcollector.NewSQLPools("tenants", tenants, nil))
	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("prometheus families:", len(mfs))

	r, err := otelmetrics.RegisterCache(noop.NewMeterProvider().Meter("consumer"), "tenants", tenants)
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Unregister(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("otelmetrics registered")

	// redisadapter is installed and linked; no Redis is needed to build.
	_ = redisadapter.New[string]
}

// The fleet budget installs and builds too: one budget for every process,
// through Redis, behind sqladapter's Options.Budget.
var _ = redisbudget.New

// And the pgx adapter: one pgxpool.Pool per tenant.
var _ = pgxadapter.New[string]
