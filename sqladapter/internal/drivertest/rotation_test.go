package drivertest_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
	"github.com/rescache/rescache/sqladapter"
)

// envRedis points the rotation test at a real Redis; unset, it uses
// miniredis.
const envRedis = "RESCACHE_REDIS_ADDR"

// rotationSecret is what a tenant's DSN function reads: its role's
// current password, and the number of rotations so far.
type rotationSecret struct {
	password string
	gen      int
}

// TestPostgresCredentialRotation rotates tenant passwords under load across
// two instances. Each of 20 tenants is a PostgreSQL role with a password;
// two caches (two instances, each with its own go-redis client) hold a pool
// per tenant and run redisadapter.Follow on one channel, while 32 callers
// run leased queries on both. In each of three rounds, half of the
// tenants get a new password (ALTER ROLE), the secret their DSN functions
// read is updated, and the second instance announces a refresh of each.
//
// Both instances swap to a pool that logs in with the new password (each
// pool's connections carry application_name <instance>-g<rotation>); the
// old password is refused; no query fails; the old pools' server
// connections, counted in pg_stat_activity by role and application_name,
// drop to 0 once their leases are released, under load; Stats.Refreshes
// counts every rotation on both instances.
//
// The server of RESCACHE_POSTGRES_DSN may trust local connections (CI's
// does), and then never checks a password. This test therefore starts a
// PostgreSQL of its own (initdb and pg_ctl in PATH, as TestPostgresRestart)
// whose tenant roles log in with scram-sha-256. It runs whenever
// RESCACHE_POSTGRES_DSN is set.
//
// PostgreSQL keeps one password per role: between ALTER ROLE and the swap
// an old pool cannot open a connection. Each pool here holds one
// connection, kept idle (MaxOpenConns = MaxIdleConns = 1), so an old pool
// never dials again; an application keeps the old credential valid until
// every instance swapped (two roles, or VALID UNTIL).
func TestPostgresCredentialRotation(t *testing.T) {
	if os.Getenv(envPostgres) == "" {
		t.Skip("set " + envPostgres + " to run the tests that need PostgreSQL's binaries (this one starts a server of its own)")
	}
	ctx := context.Background()
	pg := newPGInstance(t)
	admin, err := sql.Open("pgx", pg.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	admin.SetMaxOpenConns(4)

	// Passwords checked for every role but postgres over TCP, and room for
	// the old and new pools of both instances.
	hba := "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(pg.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	pg.stop(t)
	opts := "-p " + pg.port + " -k " + pg.dir + " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
	if out, err := pg.pgctl("start", "-l", filepath.Join(pg.dir, "log"), "-o", opts); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
	admin, _ = sql.Open("pgx", pg.dsn("postgres"))
	admin.SetMaxOpenConns(4)

	// Roles rescache_<rand>_rN, dropped at the end.
	const tenants = 20
	var buf [4]byte
	rand.Read(buf[:])
	prefix := "rescache_" + hex.EncodeToString(buf[:]) + "_"
	newPassword := func() string {
		var b [12]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	var secrets sync.Map // tenant (its role) -> rotationSecret
	names := make([]string, tenants)
	for i := range names {
		names[i] = prefix + "r" + strconv.Itoa(i)
		s := rotationSecret{password: newPassword()}
		if _, err := admin.ExecContext(ctx, "CREATE ROLE "+names[i]+" LOGIN PASSWORD '"+s.password+"'"); err != nil {
			t.Fatal(err)
		}
		secrets.Store(names[i], s)
	}
	t.Cleanup(func() {
		for _, name := range names {
			if _, err := admin.ExecContext(context.Background(), "DROP ROLE IF EXISTS "+name); err != nil {
				t.Errorf("DROP ROLE %s: %v", name, err)
			}
		}
		admin.Close()
	})
	secretOf := func(tenant string) rotationSecret {
		s, _ := secrets.Load(tenant)
		return s.(rotationSecret)
	}
	dsn := func(instance, tenant string, s rotationSecret) string {
		return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%s/postgres?sslmode=disable&connect_timeout=5&application_name=%s-g%d",
			tenant, s.password, pg.port, instance, s.gen)
	}

	// Redis: a real server or miniredis; one client per instance.
	redisAddr := os.Getenv(envRedis)
	if redisAddr == "" {
		t.Logf("%s is not set: the instances announce through miniredis", envRedis)
		redisAddr = miniredis.RunT(t).Addr()
	}
	channel := fmt.Sprintf("%srotation-%d", prefix, time.Now().UnixNano())

	// Two instances. Cleanups run last first: Follow stops, then the
	// caches shut down, then no connection of the tenants may be left.
	t.Cleanup(func() {
		waitRoleConns(t, admin, prefix, "no connections after Shutdown", func(m map[string]int) bool { return len(m) == 0 })
	})
	instances := []string{"a", "b"}
	caches := make([]*rescache.Cache[string, *sql.DB], len(instances))
	clients := make([]*redis.Client, len(instances))
	follows := make([]chan error, len(instances))
	fctx, stopFollow := context.WithCancel(ctx)
	for i, instance := range instances {
		c, err := sqladapter.New(sqladapter.Options[string]{
			Driver: "pgx",
			DSN: func(_ context.Context, tenant string) (string, error) {
				return dsn(instance, tenant, secretOf(tenant)), nil
			},
			Pool: func(string) sqladapter.PoolSettings {
				return sqladapter.PoolSettings{MaxOpenConns: 1, MaxIdleConns: 1}
			},
			Cache: rescache.Options[string, *sql.DB]{MaxConcurrentBuilds: 4},
		})
		if err != nil {
			t.Fatal(err)
		}
		caches[i] = c
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Shutdown(sctx); err != nil {
				t.Errorf("instance %s: Shutdown: %v", instance, err)
			}
		})
		clients[i] = redis.NewClient(&redis.Options{Addr: redisAddr})
		t.Cleanup(func() { clients[i].Close() })
	}
	for i := range instances {
		follows[i] = make(chan error, 1)
		go func() {
			follows[i] <- redisadapter.Follow(fctx, clients[i], channel, caches[i], func(s string) (string, error) {
				if !strings.HasPrefix(s, prefix) {
					return "", fmt.Errorf("not a tenant of this test: %q", s)
				}
				return s, nil
			})
		}()
	}
	stopFollows := sync.OnceFunc(func() {
		stopFollow()
		for i, ch := range follows {
			if err := <-ch; !errors.Is(err, context.Canceled) {
				t.Errorf("instance %s: Follow returned %v; want context.Canceled", instances[i], err)
			}
		}
	})
	t.Cleanup(stopFollows)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := clients[1].PubSubNumSub(ctx, channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[channel] == int64(len(instances)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, %d of %d instances subscribed", n[channel], len(instances))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// query runs one leased query on instance i's pool of tenant and
	// returns the application_name of its connection.
	query := func(ctx context.Context, i int, tenant string) (string, error) {
		l, err := caches[i].Lease(ctx, tenant)
		if err != nil {
			return "", err
		}
		defer l.Release()
		var user, app string
		err = l.Value().QueryRowContext(ctx, "SELECT current_user, current_setting('application_name') FROM pg_sleep(0.002)").Scan(&user, &app)
		if err != nil {
			return "", fmt.Errorf("instance %s, tenant %s: %w", instances[i], tenant, err)
		}
		if user != tenant {
			return "", fmt.Errorf("instance %s, tenant %s: query ran as %s", instances[i], tenant, user)
		}
		return app, nil
	}
	for i := range instances {
		for _, tenant := range names {
			if _, err := query(ctx, i, tenant); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Load: 32 callers, leased queries over every tenant on both instances.
	var (
		ok, failed atomic.Int64
		errMu      sync.Mutex
		errs       []error
	)
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	for w := range 32 {
		load.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := query(qctx, (w+n)%len(instances), names[mathrand.IntN(tenants)])
				cancel()
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	endLoad := sync.OnceFunc(func() {
		close(stopLoad)
		load.Wait()
	})
	t.Cleanup(endLoad)

	// Three rounds; each rotates half of the tenants.
	const rounds = 3
	rotations := 0
	for round := range rounds {
		began := time.Now()
		var rotated []string
		var oldSecret rotationSecret // of rotated[0]
		for i, tenant := range names {
			if i%2 != round%2 {
				continue
			}
			old := secretOf(tenant)
			s := rotationSecret{password: newPassword(), gen: old.gen + 1}
			if _, err := admin.ExecContext(ctx, "ALTER ROLE "+tenant+" PASSWORD '"+s.password+"'"); err != nil {
				t.Fatal(err)
			}
			secrets.Store(tenant, s)
			if err := redisadapter.Announce(ctx, clients[1], channel, redisadapter.OpRefresh, tenant); err != nil {
				t.Fatal(err)
			}
			if rotated == nil {
				oldSecret = old
			}
			rotated = append(rotated, tenant)
			rotations++
		}
		// Both instances serve every rotated tenant from a new pool.
		for _, tenant := range rotated {
			gen := secretOf(tenant).gen
			for i, instance := range instances {
				want := fmt.Sprintf("%s-g%d", instance, gen)
				waitUntilT(t, 10*time.Second, fmt.Sprintf("instance %s to serve %s from its new pool", instance, tenant), func() (bool, string) {
					app, err := query(ctx, i, tenant)
					if err != nil {
						t.Fatal(err)
					}
					return app == want, "application_name " + app + ", want " + want
				})
			}
		}
		swapped := time.Since(began)
		// The old password is refused.
		if err := pingOnce(dsn("check", rotated[0], oldSecret)); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
			t.Errorf("a login with an old password: %v; want password authentication failed", err)
		}
		// The old pools' connections leave the server, under load.
		waitRoleConns(t, admin, prefix, "round "+strconv.Itoa(round)+": the old pools' connections to leave", func(m map[string]int) bool {
			for k, n := range m {
				tenant, app, _ := strings.Cut(k, "/")
				_, genStr, _ := strings.Cut(app, "-g")
				if g, _ := strconv.Atoi(genStr); g != secretOf(tenant).gen && n > 0 {
					return false
				}
			}
			return true
		})
		t.Logf("round %d: %d tenants rotated; both instances swapped within %v; queries so far: %d ok, %d failed",
			round, len(rotated), swapped.Round(time.Millisecond), ok.Load(), failed.Load())
	}
	endLoad()
	stopFollows()

	if failed.Load() != 0 {
		t.Errorf("%d of %d queries failed; first errors: %v", failed.Load(), failed.Load()+ok.Load(), errs)
	}
	if ok.Load() < 100 {
		t.Errorf("only %d queries ran under the rotations", ok.Load())
	}
	for i, instance := range instances {
		s := caches[i].Stats()
		t.Logf("instance %s: Stats %+v", instance, s)
		if s.Refreshes != uint64(rotations) || s.RefreshErrors != 0 {
			t.Errorf("instance %s: Refreshes %d, RefreshErrors %d; want %d, 0", instance, s.Refreshes, s.RefreshErrors, rotations)
		}
	}
	// At rest: one connection per pool, every one on the current password.
	m := waitRoleConns(t, admin, prefix, "one connection per tenant and instance", func(m map[string]int) bool {
		return len(m) == tenants*len(instances)
	})
	for k, n := range m {
		tenant, app, _ := strings.Cut(k, "/")
		instance, genStr, _ := strings.Cut(app, "-g")
		if g, _ := strconv.Atoi(genStr); g != secretOf(tenant).gen || n != 1 {
			t.Errorf("%s: %d connections of instance %s at rotation %s; want 1 at %d", tenant, n, instance, genStr, secretOf(tenant).gen)
		}
	}
}

// roleConns returns the server's client connections of the roles that
// start with prefix, by "role/application_name".
func roleConns(ctx context.Context, admin *sql.DB, prefix string) (map[string]int, error) {
	rows, err := admin.QueryContext(ctx, "SELECT usename, application_name, count(*) FROM pg_stat_activity WHERE usename LIKE $1 GROUP BY 1, 2", prefix+"%")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[string]int)
	for rows.Next() {
		var user, app string
		var n int
		if err := rows.Scan(&user, &app, &n); err != nil {
			return nil, err
		}
		m[user+"/"+app] = n
	}
	return m, rows.Err()
}

// waitRoleConns polls roleConns until cond holds, for 10s at most.
func waitRoleConns(t *testing.T, admin *sql.DB, prefix, what string, cond func(map[string]int) bool) map[string]int {
	t.Helper()
	var m map[string]int
	waitUntilT(t, 10*time.Second, what, func() (bool, string) {
		var err error
		if m, err = roleConns(context.Background(), admin, prefix); err != nil {
			t.Fatalf("counting connections: %v", err)
		}
		return cond(m), fmt.Sprint(m)
	})
	return m
}

// waitUntilT polls cond every 10ms until it holds, and fails t with its
// last message after d.
func waitUntilT(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s: %s", d, what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pingOnce opens a connection with dsn and closes it.
func pingOnce(dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}
