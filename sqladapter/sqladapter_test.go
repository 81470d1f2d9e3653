package sqladapter_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// The tests in this file use the fake driver, for failures that a real
// server cannot be made to produce on demand.

// newFakeCache returns a cache over fake servers, whose tenants' DSN is
// fakeDSN(tenant, extra...), closed at the end of the test.
func newFakeCache(t *testing.T, edit func(*sqladapter.Options[string]), extra ...string) *rescache.Cache[string, *sql.DB] {
	t.Helper()
	opts := sqladapter.Options[string]{
		Driver: fakeDriverName,
		DSN: func(_ context.Context, tenant string) (string, error) {
			return fakeDSN(tenant, extra...), nil
		},
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := sqladapter.New(opts)
	if err != nil {
		t.Fatalf("sqladapter.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestNewRejectsBadOptions(t *testing.T) {
	dsn := func(context.Context, string) (string, error) { return "x", nil }
	connector := func(context.Context, string) (driver.Connector, error) { return nil, nil }
	tests := []struct {
		name string
		opts sqladapter.Options[string]
		want string
	}{
		{"nothing set", sqladapter.Options[string]{}, "Options.Driver and Options.DSN, or Options.Connector, are required"},
		{"unknown driver", sqladapter.Options[string]{Driver: "postgress", DSN: dsn}, `unknown driver "postgress"`},
		{"driver without DSN", sqladapter.Options[string]{Driver: fakeDriverName}, "Options.DSN is nil"},
		{"DSN without driver", sqladapter.Options[string]{DSN: dsn}, "Options.Driver is empty"},
		{"DSN and Connector", sqladapter.Options[string]{Driver: fakeDriverName, DSN: dsn, Connector: connector}, "not both"},
		{"Driver and Connector", sqladapter.Options[string]{Driver: fakeDriverName, Connector: connector}, "not both"},
		{"negative PingTimeout", sqladapter.Options[string]{Driver: fakeDriverName, DSN: dsn, PingTimeout: -time.Second}, "PingTimeout is negative"},
		{"bad cache options", sqladapter.Options[string]{Driver: fakeDriverName, DSN: dsn, Cache: rescache.Options[string, *sql.DB]{MaxEntries: -1}}, "MaxEntries is negative"},
	}
	for _, tt := range tests {
		c, err := sqladapter.New(tt.opts)
		if err == nil {
			c.Close()
			t.Errorf("%s: New() succeeded; want an error containing %q", tt.name, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "sqladapter: ") {
			t.Errorf("%s: New() error = %q; want one starting sqladapter: and containing %q", tt.name, err, tt.want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	const password = "pa55-word"
	errSecretStore := errors.New("secret store unavailable")

	t.Run("DSN function error", func(t *testing.T) {
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(context.Context, string) (string, error) { return "", errSecretStore }
		})
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "dsn")
		if !errors.Is(err, errSecretStore) {
			t.Errorf("errors.Is(%v, errSecretStore) = false", err)
		}
	})
	t.Run("empty DSN", func(t *testing.T) {
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(context.Context, string) (string, error) { return "", nil }
		})
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "dsn")
		if err != nil && !strings.Contains(err.Error(), "empty data source name") {
			t.Errorf("Get() error = %q; want it to say the DSN is empty", err)
		}
	})
	t.Run("open fails", func(t *testing.T) {
		// The fake driver repeats the whole DSN, password included.
		c := newFakeCache(t, nil, "fail=open", "password="+password)
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "open")
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("Get() error = %q; shows the password", err)
		}
		t.Logf("open fails: %v", err)
	})
	t.Run("ping fails, nothing cached, next call retries", func(t *testing.T) {
		srv := newFakeServer(t.Name())
		srv.down.Store(true)
		var builds atomic.Int32
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(context.Context, string) (string, error) {
				builds.Add(1)
				return fakeDSN(srv.name, "password="+password), nil
			}
		})
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "ping")
		if err != nil && (strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), "connection refused")) {
			t.Errorf("Get() error = %q; want the cause without the password", err)
		}
		if c.Len() != 0 {
			t.Errorf("Len() = %d after a failed build; want 0", c.Len())
		}
		srv.down.Store(false)
		if _, err := c.Get(ctx, "acme"); err != nil {
			t.Errorf("Get() once the server is up: %v", err)
		}
		if n := builds.Load(); n != 2 {
			t.Errorf("%d builds; want 2", n)
		}
	})
	t.Run("ping times out", func(t *testing.T) {
		srv := newFakeServer(t.Name())
		srv.block.Store(true)
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.PingTimeout = 50 * time.Millisecond
			o.DSN = func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil }
		})
		start := time.Now()
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "ping")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Get() took %v; want about PingTimeout", d)
		}
	})
	t.Run("init fails, pool closed", func(t *testing.T) {
		srv := newFakeServer(t.Name())
		errSchema := errors.New("schema migration failed")
		var initDB *sql.DB
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil }
			o.Init = func(_ context.Context, _ string, db *sql.DB) error { initDB = db; return errSchema }
		})
		_, err := c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "init")
		if !errors.Is(err, errSchema) {
			t.Errorf("errors.Is(%v, errSchema) = false", err)
		}
		if n := srv.open.Load(); n != 0 {
			t.Errorf("%d connections open after a failed init; want 0", n)
		}
		if initDB == nil || initDB.PingContext(ctx) == nil {
			t.Errorf("the pool of a failed build is still open")
		}
	})
	t.Run("connector error", func(t *testing.T) {
		c, err := sqladapter.New(sqladapter.Options[string]{
			Connector: func(context.Context, string) (driver.Connector, error) { return nil, errSecretStore },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "connector")
		if !errors.Is(err, errSecretStore) {
			t.Errorf("errors.Is(%v, errSecretStore) = false", err)
		}
	})
	t.Run("connector returns nil", func(t *testing.T) {
		c, err := sqladapter.New(sqladapter.Options[string]{
			Connector: func(context.Context, string) (driver.Connector, error) { return nil, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Get(ctx, "acme")
		checkTenantError(t, err, "acme", "connector")
	})
	t.Run("KeyString names the tenant", func(t *testing.T) {
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(context.Context, string) (string, error) { return "", nil }
			o.Cache.KeyString = func(string) string { return "tenant-7" }
		})
		_, err := c.Get(ctx, "acme corp")
		checkTenantError(t, err, "tenant-7", "dsn")
	})
}

func TestConnector(t *testing.T) {
	ctx := context.Background()
	srv := newFakeServer(t.Name())
	c, err := sqladapter.New(sqladapter.Options[string]{
		Connector: func(_ context.Context, tenant string) (driver.Connector, error) {
			return fakeDriver{}.OpenConnector(fakeDSN(srv.name))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	db, err := c.Get(ctx, "acme")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	var got string
	if err := db.QueryRowContext(ctx, "SELECT server").Scan(&got); err != nil || got != srv.name {
		t.Errorf("SELECT server = %q, %v; want %q", got, err, srv.name)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := srv.open.Load(); n != 0 {
		t.Errorf("%d connections open after Close; want 0", n)
	}
}

func TestPoolSettings(t *testing.T) {
	ctx := context.Background()
	settings := map[string]sqladapter.PoolSettings{
		"big":   {MaxOpenConns: 50, MaxIdleConns: 10},
		"trial": {MaxOpenConns: 2},
		"open":  {MaxOpenConns: -1},
	}
	for name := range settings {
		newFakeServer(t.Name() + "/" + name)
	}
	newFakeServer(t.Name() + "/default")
	tests := []struct {
		tenant  string
		pool    bool // Options.Pool set
		maxOpen int  // as sql.DBStats reports it; 0 is no limit
	}{
		{"big", true, 50},
		{"trial", true, 2},
		{"open", true, 0},
		{"default", true, sqladapter.DefaultMaxOpenConns},
		{"default", false, sqladapter.DefaultMaxOpenConns},
	}
	for _, tt := range tests {
		c := newFakeCache(t, func(o *sqladapter.Options[string]) {
			o.DSN = func(_ context.Context, tenant string) (string, error) { return fakeDSN(t.Name() + "/" + tenant), nil }
			if tt.pool {
				o.Pool = func(tenant string) sqladapter.PoolSettings { return settings[tenant] }
			}
		})
		db, err := c.Get(ctx, tt.tenant)
		if err != nil {
			t.Fatalf("Get(%s): %v", tt.tenant, err)
		}
		if got := db.Stats().MaxOpenConnections; got != tt.maxOpen {
			t.Errorf("tenant %s (Pool set: %v): MaxOpenConnections = %d; want %d", tt.tenant, tt.pool, got, tt.maxOpen)
		}
	}

	d := sqladapter.DefaultPoolSettings()
	want := sqladapter.PoolSettings{MaxOpenConns: 10, MaxIdleConns: 2, ConnMaxLifetime: 30 * time.Minute, ConnMaxIdleTime: 5 * time.Minute}
	if d != want {
		t.Errorf("DefaultPoolSettings() = %+v; want %+v", d, want)
	}
}

// TestIdleConnectionsReturn: with ConnMaxIdleTime, a tenant that stays
// cached but goes quiet gives its connections back.
func TestIdleConnectionsReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		srv := newFakeServer(t.Name())
		c, err := sqladapter.New(sqladapter.Options[string]{
			Driver: fakeDriverName,
			DSN:    func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil },
			Pool: func(string) sqladapter.PoolSettings {
				return sqladapter.PoolSettings{MaxIdleConns: 5, ConnMaxIdleTime: time.Minute}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		db, err := c.Get(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		var conns []*sql.Conn
		for range 4 {
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		for _, conn := range conns {
			conn.Close()
		}
		if n := srv.open.Load(); n != 4 {
			t.Fatalf("%d connections open; want 4", n)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if n := srv.open.Load(); n != 0 {
			t.Errorf("%d connections open after two idle minutes; want 0", n)
		}
		if _, ok := c.Peek("acme"); !ok {
			t.Errorf("the tenant left the cache; want it cached with no connection")
		}
	})
}

func TestHealthCheck(t *testing.T) {
	t.Run("evicts a pool whose server went down", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			srv := newFakeServer(t.Name())
			reasons := make(chan rescache.EvictReason, 2)
			c, err := sqladapter.New(sqladapter.Options[string]{
				Driver:      fakeDriverName,
				DSN:         func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil },
				HealthCheck: true,
				Cache: rescache.Options[string, *sql.DB]{
					HealthCheckInterval: 10 * time.Second,
					OnEvict:             func(_ string, _ *sql.DB, r rescache.EvictReason) { reasons <- r },
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Get(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Second) // healthy: checks pass
			synctest.Wait()
			if _, ok := c.Peek("acme"); !ok {
				t.Fatalf("a healthy pool was evicted")
			}
			srv.down.Store(true)
			time.Sleep(30 * time.Second)
			synctest.Wait()
			if _, ok := c.Peek("acme"); ok {
				t.Fatalf("the pool of a server that is down is still cached")
			}
			if r := <-reasons; r != rescache.EvictUnhealthy {
				t.Errorf("evicted for %v; want %v", r, rescache.EvictUnhealthy)
			}
			if n := srv.open.Load(); n != 0 {
				t.Errorf("%d connections open after eviction; want 0", n)
			}
			srv.down.Store(false)
			if _, err := c.Get(ctx, "acme"); err != nil {
				t.Errorf("Get after the server came back: %v", err)
			}
			if s := c.Stats(); s.Builds != 2 || s.HealthChecks == 0 || s.HealthCheckErrors != 1 {
				t.Errorf("Stats() = Builds %d, HealthChecks %d, HealthCheckErrors %d; want 2, > 0, 1", s.Builds, s.HealthChecks, s.HealthCheckErrors)
			}
		})
	})
	t.Run("keeps a HealthCheck of the caller", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := newFakeServer(t.Name())
			var calls atomic.Int32
			c, err := sqladapter.New(sqladapter.Options[string]{
				Driver:      fakeDriverName,
				DSN:         func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil },
				HealthCheck: true,
				Cache: rescache.Options[string, *sql.DB]{
					HealthCheck: func(context.Context, string, *sql.DB) error {
						calls.Add(1)
						return errors.New("tenant suspended")
					},
					HealthCheckInterval: 10 * time.Second,
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Get(context.Background(), "acme"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Second)
			synctest.Wait()
			if calls.Load() == 0 {
				t.Errorf("the caller's HealthCheck was not called")
			}
			if _, ok := c.Peek("acme"); ok {
				t.Errorf("the caller's failing HealthCheck did not evict the tenant")
			}
		})
	})
	t.Run("off by default", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := newFakeServer(t.Name())
			c := newFakeCache(t, func(o *sqladapter.Options[string]) {
				o.DSN = func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil }
			})
			defer c.Close()
			if _, err := c.Get(context.Background(), "acme"); err != nil {
				t.Fatal(err)
			}
			srv.down.Store(true)
			time.Sleep(5 * time.Minute)
			synctest.Wait()
			if _, ok := c.Peek("acme"); !ok {
				t.Errorf("a pool was evicted without HealthCheck")
			}
		})
	})
}

// TestCloseDefault: without Cache.Close, a pool that leaves the cache is
// closed with db.Close.
func TestCloseDefault(t *testing.T) {
	srv := newFakeServer(t.Name())
	c := newFakeCache(t, func(o *sqladapter.Options[string]) {
		o.DSN = func(context.Context, string) (string, error) { return fakeDSN(srv.name), nil }
	})
	db, err := c.Get(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.open.Load(); n != 1 {
		t.Fatalf("%d connections open after the build; want 1 (the ping's)", n)
	}
	c.Invalidate("acme")
	if n := srv.open.Load(); n != 0 {
		t.Errorf("%d connections open after Invalidate; want 0", n)
	}
	if err := db.PingContext(context.Background()); err == nil {
		t.Errorf("Ping after Invalidate succeeded; want sql: database is closed")
	}
}

func TestPoolStats(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"acme", "globex"} {
		newFakeServer(t.Name() + "/" + name)
	}
	c := newFakeCache(t, func(o *sqladapter.Options[string]) {
		o.DSN = func(_ context.Context, tenant string) (string, error) { return fakeDSN(t.Name() + "/" + tenant), nil }
		o.Pool = func(tenant string) sqladapter.PoolSettings {
			if tenant == "acme" {
				return sqladapter.PoolSettings{MaxOpenConns: 7}
			}
			return sqladapter.PoolSettings{}
		}
	})
	if got := sqladapter.PoolStats(c); len(got) != 0 {
		t.Errorf("PoolStats of an empty cache = %v; want none", got)
	}
	l, err := c.Lease(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	acme := l.Value()
	conn, err := acme.Conn(ctx) // one connection in use
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := c.Get(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	before := c.Stats()

	got := sqladapter.PoolStats(c)
	if len(got) != 2 {
		t.Fatalf("PoolStats() has %d tenants; want 2: %v", len(got), got)
	}
	if s := got["acme"]; s.MaxOpenConnections != 7 || s.OpenConnections != 1 || s.InUse != 1 || s.Idle != 0 {
		t.Errorf("PoolStats()[acme] = %+v; want max 7, open 1, in use 1", s)
	}
	if s := got["globex"]; s.MaxOpenConnections != sqladapter.DefaultMaxOpenConns || s.OpenConnections != 1 || s.Idle != 1 {
		t.Errorf("PoolStats()[globex] = %+v; want max %d, open 1, idle 1 (the ping's)", s, sqladapter.DefaultMaxOpenConns)
	}
	if after := c.Stats(); after.Hits != before.Hits || after.Misses != before.Misses {
		t.Errorf("PoolStats counted as a use: Hits %d -> %d, Misses %d -> %d", before.Hits, after.Hits, before.Misses, after.Misses)
	}

	c.Invalidate("globex")
	if got := sqladapter.PoolStats(c); len(got) != 1 {
		t.Errorf("PoolStats() after Invalidate = %v; want acme only", got)
	}
}

// checkTenantError checks that err is an *sqladapter.Error naming tenant and
// op.
func checkTenantError(t *testing.T, err error, tenant, op string) {
	t.Helper()
	var e *sqladapter.Error
	if !errors.As(err, &e) {
		t.Errorf("Get(%s) error = %v; want an *sqladapter.Error", tenant, err)
		return
	}
	if e.Tenant != tenant || e.Op != op {
		t.Errorf("Get(%s) error names tenant %q, op %q; want %q, %q", tenant, e.Tenant, e.Op, tenant, op)
	}
	if want := fmt.Sprintf("sqladapter: tenant %q: %s: ", tenant, op); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Get(%s) error = %q; want prefix %q", tenant, err, want)
	}
}
