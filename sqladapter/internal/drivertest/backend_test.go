package drivertest_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/rescache/rescache/sqladapter"
)

// Environment variables that add real servers to the suite. When one is
// set, every backend test also runs against that server, and fails (never
// skips) if the server cannot be reached.
const (
	envPostgres = "RESCACHE_POSTGRES_DSN" // e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
	envMySQL    = "RESCACHE_MYSQL_DSN"    // e.g. root@tcp(127.0.0.1:3306)/test
)

// numTenants is the number of tenant databases each backend provides.
const numTenants = 20

// backend is one database system the suite runs against: SQLite files
// (always), PostgreSQL or MySQL/MariaDB (when their variable is set). Each
// has numTenants tenant databases, made once per test binary and dropped
// by TestMain; tests share them one at a time and leave no connection
// open.
type backend struct {
	name     string // "sqlite", "postgres", "mysql"
	driver   string // database/sql driver name
	adminDSN string // server backends: a DSN with the rights to create databases
	admin    *sql.DB
	dir      string   // sqlite: the directory of the database files
	prefix   string   // database names start with it; unique per test binary
	tenants  []string // database names of the tenants

	mu      sync.Mutex // protects created
	created []string   // databases to drop at the end
}

var (
	backendsOnce sync.Once
	allBackends  []*backend
	backendsErr  error
	sqliteRoot   string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := dropBackends(); err != nil {
		fmt.Fprintln(os.Stderr, "sqladapter tests: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	// Every pool the tests opened is closed by now: no goroutine of a
	// pool (database/sql's opener and cleaner) or of a cache may be left.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "sqladapter tests: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// backends returns the backends of this run, setting them up on first use.
// A server whose variable is set but which cannot be reached fails t.
func backends(t testing.TB) []*backend {
	t.Helper()
	backendsOnce.Do(func() { allBackends, backendsErr = setupBackends() })
	if backendsErr != nil {
		t.Fatalf("setting up the test databases: %v", backendsErr)
	}
	return allBackends
}

// forEachBackend runs f as a subtest for every backend, in parallel: the
// backends are separate servers, so their subtests do not disturb each
// other.
func forEachBackend(t *testing.T, f func(t *testing.T, b *backend)) {
	t.Helper()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func setupBackends() ([]*backend, error) {
	var buf [4]byte
	rand.Read(buf[:])
	prefix := "rescache_" + hex.EncodeToString(buf[:]) + "_"

	dir, err := os.MkdirTemp("", "rescache-sqladapter-")
	if err != nil {
		return nil, err
	}
	sqliteRoot = dir
	out := []*backend{{name: "sqlite", driver: "sqlite", dir: dir, prefix: prefix}}
	for _, s := range []struct{ name, driver, env string }{
		{"postgres", "pgx", envPostgres},
		{"mysql", "mysql", envMySQL},
	} {
		dsn := os.Getenv(s.env)
		if dsn == "" {
			continue
		}
		admin, err := sql.Open(s.driver, dsn)
		if err != nil {
			return nil, fmt.Errorf("%s=%s: %v", s.env, sqladapter.RedactDSN(dsn), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = admin.PingContext(ctx)
		cancel()
		if err != nil {
			admin.Close()
			return nil, fmt.Errorf("%s is set but the server cannot be reached: %v", s.env, err)
		}
		admin.SetMaxOpenConns(8)
		out = append(out, &backend{name: s.name, driver: s.driver, adminDSN: dsn, admin: admin, prefix: prefix})
	}
	for _, b := range out {
		for i := range numTenants {
			b.tenants = append(b.tenants, fmt.Sprintf("%st%02d", b.prefix, i))
		}
		if err := b.createDatabases(context.Background(), b.tenants...); err != nil {
			return out, fmt.Errorf("%s: %v", b.name, err)
		}
	}
	return out, nil
}

func dropBackends() error {
	var errs []error
	for _, b := range allBackends {
		b.mu.Lock()
		names := b.created
		b.created = nil
		b.mu.Unlock()
		if b.admin != nil {
			errs = append(errs, b.dropDatabases(context.Background(), names...))
			b.admin.Close()
		}
	}
	if sqliteRoot != "" {
		errs = append(errs, os.RemoveAll(sqliteRoot))
	}
	return errors.Join(errs...)
}

// dsn returns the DSN of database name.
func (b *backend) dsn(name string) string {
	switch b.name {
	case "postgres":
		u, err := url.Parse(b.adminDSN)
		if err != nil {
			panic(err) // the admin DSN was used to connect already
		}
		u.Path = "/" + name
		return u.String()
	case "mysql":
		cfg, err := mysql.ParseDSN(b.adminDSN)
		if err != nil {
			panic(err)
		}
		cfg.DBName = name
		return cfg.FormatDSN()
	default:
		// mode=rw: like a server, SQLite then refuses a database that was
		// not created.
		return "file:" + filepath.Join(b.dir, name+".db") + "?mode=rw&_pragma=busy_timeout(5000)"
	}
}

// createDatabases makes the databases (in parallel: on PostgreSQL each
// CREATE DATABASE waits for a checkpoint) and records them for the drop at
// the end.
func (b *backend) createDatabases(ctx context.Context, names ...string) error {
	return b.parallel(names, func(name string) error {
		var err error
		switch b.name {
		case "postgres":
			_, err = b.admin.ExecContext(ctx, "CREATE DATABASE "+name)
			var pgErr interface{ SQLState() string }
			if errors.As(err, &pgErr) && pgErr.SQLState() == "42P04" { // duplicate_database
				err = nil
			}
		case "mysql":
			_, err = b.admin.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+name)
		default:
			var db *sql.DB
			db, err = sql.Open("sqlite", "file:"+filepath.Join(b.dir, name+".db")+"?mode=rwc")
			if err == nil {
				_, err = db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS created (at TEXT)")
				db.Close()
			}
		}
		if err == nil {
			b.mu.Lock()
			b.created = append(b.created, name)
			b.mu.Unlock()
		}
		return err
	})
}

// dropDatabases drops the databases, closing their connections first.
func (b *backend) dropDatabases(ctx context.Context, names ...string) error {
	return b.parallel(names, func(name string) error {
		switch b.name {
		case "postgres":
			_, err := b.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			return err
		case "mysql":
			_, err := b.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name)
			return err
		default:
			return os.Remove(filepath.Join(b.dir, name+".db"))
		}
	})
}

func (b *backend) parallel(names []string, f func(string) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := f(name); err != nil {
				errs[i] = fmt.Errorf("database %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// currentDB returns the name of the database db's connections use.
func (b *backend) currentDB(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (string, error) {
	var name string
	var err error
	switch b.name {
	case "postgres":
		err = q.QueryRowContext(ctx, "SELECT current_database()").Scan(&name)
	case "mysql":
		err = q.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name)
	default:
		err = q.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&name)
		name = strings.TrimSuffix(filepath.Base(name), ".db")
	}
	return name, err
}

// countsConnections reports whether serverConns works for b: SQLite has
// no server.
func (b *backend) countsConnections() bool { return b.admin != nil }

// serverConns returns, as the server sees them, the number of client
// connections to each of the databases (zero for a database not listed).
func (b *backend) serverConns(ctx context.Context, names ...string) (map[string]int, error) {
	var query string
	switch b.name {
	case "postgres":
		query = "SELECT datname, count(*) FROM pg_stat_activity WHERE datname LIKE '" + b.prefix + "%' GROUP BY datname"
	case "mysql":
		query = "SELECT db, count(*) FROM information_schema.processlist WHERE db LIKE '" + b.prefix + "%' GROUP BY db"
	default:
		return nil, errors.New("sqlite has no server-side connections")
	}
	rows, err := b.admin.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	all := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		all[name] = n
	}
	out := make(map[string]int, len(names))
	for _, name := range names {
		out[name] = all[name]
	}
	return out, rows.Err()
}

// totalConns adds up serverConns.
func (b *backend) totalConns(t *testing.T, names ...string) int {
	t.Helper()
	m, err := b.serverConns(context.Background(), names...)
	if err != nil {
		t.Fatalf("counting server connections: %v", err)
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// waitConns polls the server until cond holds for the connection counts of
// names, and fails t with the last counts after the deadline. Closing a
// connection on the client does not end its server process at once.
func (b *backend) waitConns(t *testing.T, what string, cond func(map[string]int) bool, names ...string) map[string]int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := b.serverConns(context.Background(), names...)
		if err != nil {
			t.Fatalf("counting server connections: %v", err)
		}
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("server connections: %s did not hold within 10s; last counts %v", what, m)
		}
		time.Sleep(20 * time.Millisecond) // bounded polling
	}
}

// waitNoConns waits until the server holds no connection to names.
func (b *backend) waitNoConns(t *testing.T, names ...string) {
	t.Helper()
	if !b.countsConnections() {
		return
	}
	b.waitConns(t, "no connections", func(m map[string]int) bool {
		for _, n := range m {
			if n != 0 {
				return false
			}
		}
		return true
	}, names...)
}

// newDatabaseName returns a database name that no earlier call returned
// and that is not created yet; createDatabases records it for the drop at
// the end.
func (b *backend) newDatabaseName(suffix string) string {
	return fmt.Sprintf("%s%s%d", b.prefix, suffix, dbNameSeq.Add(1))
}

// dbNameSeq numbers the names of newDatabaseName, so that -count=N runs do
// not find the database of an earlier run.
var dbNameSeq atomic.Int64
