package drivertest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// pgInstance is a PostgreSQL server owned by one test: its own data
// directory (initdb) and port, started and stopped with pg_ctl.
type pgInstance struct {
	dir, data, port string
	asUser          string // run the server binaries as this user ("" = as the test); PostgreSQL refuses root
	maxConns        int    // the server's max_connections
}

// newPGInstance initialises a server in a fresh directory and starts it;
// t.Cleanup stops it and removes the directory. It fails t when initdb or
// pg_ctl cannot be found or run.
func newPGInstance(t *testing.T) *pgInstance {
	t.Helper()
	p := preparePGInstance(t)
	if err := p.initdb(); err != nil {
		t.Fatal(err)
	}
	p.start(t)
	return p
}

// preparePGInstance makes the directory of a server and picks its port;
// t.Cleanup stops the server and removes the directory. The caller runs
// initdb and start.
func preparePGInstance(t *testing.T) *pgInstance {
	t.Helper()
	for _, bin := range []string{"initdb", "pg_ctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found in PATH (put PostgreSQL's bin directory, e.g. /usr/lib/postgresql/15/bin, in PATH): %v", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "rescache-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgInstance{dir: dir, data: filepath.Join(dir, "data"), maxConns: 50}
	t.Cleanup(func() {
		p.pgctl("stop", "-m", "immediate") // it may be stopped already
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and no postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.asUser = "postgres"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return p
}

// initdb initialises the server's data directory.
func (p *pgInstance) initdb() error {
	if out, err := p.command("initdb", "-D", p.data, "-U", "postgres", "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

func (p *pgInstance) command(name string, args ...string) *exec.Cmd {
	if p.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", p.asUser, "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func (p *pgInstance) pgctl(args ...string) ([]byte, error) {
	return p.command("pg_ctl", append([]string{"-D", p.data, "-w", "-t", "30"}, args...)...).CombinedOutput()
}

func (p *pgInstance) start(t *testing.T) {
	t.Helper()
	opts := "-p " + p.port + " -k " + p.dir + " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=" + strconv.Itoa(p.maxConns)
	if out, err := p.pgctl("start", "-l", filepath.Join(p.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// stop stops the server in "fast" mode: it ends every session (in-flight
// queries fail) and shuts down.
func (p *pgInstance) stop(t *testing.T) {
	t.Helper()
	if out, err := p.pgctl("stop", "-m", "fast"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (p *pgInstance) dsn(db string) string {
	return "postgres://postgres@127.0.0.1:" + p.port + "/" + db + "?sslmode=disable&connect_timeout=5"
}

// TestPostgresRestart restarts a PostgreSQL server under load: calls in
// flight fail with clear errors (never "sql: database is closed"), health
// checks evict the dead pools, calls while it is down fail with a tenant
// error and are tried again, and after the restart every tenant serves
// again with no leaked connection, counted on the server.
//
// It starts a server of its own (initdb and pg_ctl in PATH) and runs when
// RESCACHE_POSTGRES_DSN is set, that is where PostgreSQL is installed.
func TestPostgresRestart(t *testing.T) {
	if os.Getenv(envPostgres) == "" {
		t.Skip("set " + envPostgres + " to run the tests that need PostgreSQL's binaries")
	}
	ctx := context.Background()
	pg := newPGInstance(t)
	admin, err := sql.Open("pgx", pg.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	admin.SetMaxIdleConns(0) // the admin connection must not count as a leak across the restart
	tenants := []string{"t1", "t2", "t3", "t4", "t5"}
	for _, name := range tenants {
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatal(err)
		}
	}
	serverConns := func() (map[string]int, error) {
		rows, err := admin.QueryContext(ctx, "SELECT datname, count(*) FROM pg_stat_activity WHERE datname LIKE 't_' GROUP BY datname")
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		m := map[string]int{}
		for rows.Next() {
			var name string
			var n int
			if err := rows.Scan(&name, &n); err != nil {
				return nil, err
			}
			m[name] = n
		}
		return m, rows.Err()
	}

	const maxOpen = 3
	var unhealthy atomic.Int32
	var mu sync.Mutex // protects evicted
	var evicted []*sql.DB
	c, err := sqladapter.New(sqladapter.Options[string]{
		Driver:      "pgx",
		DSN:         func(_ context.Context, tenant string) (string, error) { return pg.dsn(tenant), nil },
		Pool:        func(string) sqladapter.PoolSettings { return sqladapter.PoolSettings{MaxOpenConns: maxOpen} },
		PingTimeout: 2 * time.Second,
		HealthCheck: true,
		Cache: rescache.Options[string, *sql.DB]{
			HealthCheckInterval: 100 * time.Millisecond,
			HealthCheckTimeout:  time.Second,
			OnEvict: func(_ string, db *sql.DB, r rescache.EvictReason) {
				if r == rescache.EvictUnhealthy {
					unhealthy.Add(1)
				}
				mu.Lock()
				evicted = append(evicted, db)
				mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// load runs workers that query every tenant through a lease until stop
	// is closed, and returns the successes and the errors.
	load := func(stop <-chan struct{}) (ok int64, errs []error) {
		var okN atomic.Int64
		var emu sync.Mutex
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tenant := tenants[i%len(tenants)]
					err := func() error {
						qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						defer cancel()
						l, err := c.Lease(qctx, tenant)
						if err != nil {
							return err
						}
						defer l.Release()
						var got string
						if err := l.Value().QueryRowContext(qctx, "SELECT current_database()").Scan(&got); err != nil {
							return fmt.Errorf("tenant %s: query: %w", tenant, err)
						}
						if got != tenant {
							return fmt.Errorf("tenant %s: query ran on %s", tenant, got)
						}
						return nil
					}()
					if err == nil {
						okN.Add(1)
					} else {
						emu.Lock()
						errs = append(errs, err)
						emu.Unlock()
					}
				}
			})
		}
		<-stop
		wg.Wait()
		return okN.Load(), errs
	}
	runLoad := func(d time.Duration) (int64, []error) {
		stop := make(chan struct{})
		time.AfterFunc(d, func() { close(stop) })
		return load(stop)
	}

	// 1. Up: every call succeeds.
	ok, errs := runLoad(300 * time.Millisecond)
	if len(errs) > 0 || ok == 0 {
		t.Fatalf("before the restart: %d calls succeeded, %d failed (first: %v); want all to succeed", ok, len(errs), first(errs))
	}
	before := c.Stats()
	t.Logf("before the restart: %d calls, %d builds", ok, before.Builds)

	// 2. The server stops while calls are in flight.
	stop := make(chan struct{})
	type result struct {
		ok   int64
		errs []error
	}
	done := make(chan result, 1)
	go func() { ok, errs := load(stop); done <- result{ok, errs} }()
	time.Sleep(100 * time.Millisecond) // let the load run before the stop
	pg.stop(t)
	time.Sleep(200 * time.Millisecond) // and go on against a stopped server
	close(stop)
	down := <-done
	if len(down.errs) == 0 {
		t.Errorf("no call failed while the server stopped")
	}
	for _, err := range down.errs {
		if strings.Contains(err.Error(), "database is closed") {
			t.Errorf("a call under a lease saw %q", err)
		}
	}
	t.Logf("server stopped under load: %d calls succeeded, %d failed; e.g. %v", down.ok, len(down.errs), first(down.errs))

	// 3. Health checks evict every dead pool.
	deadline := time.Now().Add(10 * time.Second)
	for c.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead pools still cached 10s after the stop; health checks: %+v", c.Len(), c.Stats())
		}
		time.Sleep(20 * time.Millisecond) // bounded polling
	}
	if n := unhealthy.Load(); n != int32(len(tenants)) {
		t.Errorf("%d pools evicted as unhealthy; want %d", n, len(tenants))
	}

	// 4. While it is down, a call fails with a tenant error and the next
	// call tries again.
	for range 2 {
		_, err := c.Get(ctx, "t1")
		var e *sqladapter.Error
		if !errors.As(err, &e) || e.Tenant != "t1" || e.Op != "ping" {
			t.Errorf("Get(t1) while the server is down = %v; want an *sqladapter.Error for tenant t1, op ping", err)
		}
	}
	t.Logf("while down: %v", first([]error{func() error { _, err := c.Get(ctx, "t2"); return err }()}))

	// 5. Restart: every tenant serves again.
	pg.start(t)
	ok, errs = runLoad(300 * time.Millisecond)
	if len(errs) > 0 || ok == 0 {
		t.Errorf("after the restart: %d calls succeeded, %d failed (first: %v); want all to succeed", ok, len(errs), first(errs))
	}
	for _, tenant := range tenants {
		db, err := c.Get(ctx, tenant)
		var got string
		if err == nil {
			err = db.QueryRowContext(ctx, "SELECT current_database()").Scan(&got)
		}
		if err != nil || got != tenant {
			t.Errorf("tenant %s after the restart: %q, %v", tenant, got, err)
		}
	}
	after := c.Stats()
	t.Logf("after the restart: %d calls; builds %d -> %d, health checks %d (%d failed)", ok, before.Builds, after.Builds, after.HealthChecks, after.HealthCheckErrors)

	// 6. No leaked connection: the old pools are closed, the new ones
	// within their limit, and none is left after Close.
	// An evicted pool is closed on the cache's hook goroutine, after its
	// OnEvict, and a connection its opener was dialing when it closed is
	// counted until the dial ends, within the DSN's connect_timeout (5s):
	// wait for the last closes, up to 15s.
	open := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, db := range evicted {
			n += db.Stats().OpenConnections
		}
		return n
	}
	waited := time.Now()
	for deadline := time.Now().Add(15 * time.Second); open() != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	for i, db := range evicted {
		if st := db.Stats(); st.OpenConnections != 0 {
			t.Errorf("an evicted pool (%d of %d evicted) holds %d connections after a wait of %v; want 0 (its stats: %+v)", i+1, len(evicted), st.OpenConnections, time.Since(waited).Round(time.Millisecond), st)
		}
	}
	mu.Unlock()
	m, err := serverConns()
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range tenants {
		if m[tenant] < 1 || m[tenant] > maxOpen {
			t.Errorf("tenant %s: %d server connections after the restart; want 1 to %d", tenant, m[tenant], maxOpen)
		}
	}
	t.Logf("server connections after the restart: %v", m)
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		m, err := serverConns()
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server connections 10s after Close: %v; want none", m)
		}
		time.Sleep(20 * time.Millisecond) // bounded polling
	}
}

func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}
