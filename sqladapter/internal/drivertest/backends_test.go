package drivertest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// The tests in this file run against every backend: SQLite always,
// PostgreSQL and MySQL/MariaDB when RESCACHE_POSTGRES_DSN and
// RESCACHE_MYSQL_DSN are set. Tenant keys are database names.

// newTenantCache returns a cache of b's tenants, changed by edit, that
// Shutdown closes at the end of the test; it then waits until the server
// holds no connection to b's tenants, so that the next test starts clean.
func newTenantCache(t *testing.T, b *backend, edit func(*sqladapter.Options[string])) *rescache.Cache[string, *sql.DB] {
	t.Helper()
	opts := sqladapter.Options[string]{
		Driver: b.driver,
		DSN: func(_ context.Context, tenant string) (string, error) {
			return b.dsn(tenant), nil
		},
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := sqladapter.New(opts)
	if err != nil {
		t.Fatalf("sqladapter.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		b.waitNoConns(t, b.tenants...)
	})
	return c
}

// countingDSN wraps the DSN function of o to count its calls per tenant:
// one call is one build.
func countingDSN(o *sqladapter.Options[string]) *sync.Map {
	var counts sync.Map // tenant -> *atomic.Int32
	dsn := o.DSN
	o.DSN = func(ctx context.Context, tenant string) (string, error) {
		n, _ := counts.LoadOrStore(tenant, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		return dsn(ctx, tenant)
	}
	return &counts
}

func loadCount(m *sync.Map, tenant string) int32 {
	n, ok := m.Load(tenant)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// TestConcurrentFirstUse: 200 concurrent requests over 20 tenants open
// each tenant's pool exactly once, and every query runs on its own
// tenant's database.
func TestConcurrentFirstUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		var builds *sync.Map
		const maxOpen = 2
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			builds = countingDSN(o)
			o.Pool = func(string) sqladapter.PoolSettings { return sqladapter.PoolSettings{MaxOpenConns: maxOpen} }
		})

		const requests = 200
		start := make(chan struct{})
		errs := make(chan error, requests)
		var wg sync.WaitGroup
		for i := range requests {
			tenant := b.tenants[i%len(b.tenants)]
			wg.Go(func() {
				<-start
				l, err := c.Lease(ctx, tenant)
				if err != nil {
					errs <- fmt.Errorf("Lease(%s): %v", tenant, err)
					return
				}
				defer l.Release()
				got, err := b.currentDB(ctx, l.Value())
				if err != nil {
					errs <- fmt.Errorf("tenant %s: query: %v", tenant, err)
				} else if got != tenant {
					errs <- fmt.Errorf("tenant %s: query ran on database %s", tenant, got)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}

		for _, tenant := range b.tenants {
			if n := loadCount(builds, tenant); n != 1 {
				t.Errorf("tenant %s: pool opened %d times; want 1", tenant, n)
			}
		}
		s := c.Stats()
		if s.Builds != numTenants || s.Hits+s.Misses != requests || s.Entries != numTenants {
			t.Errorf("Stats() = Builds %d, Hits+Misses %d, Entries %d; want %d, %d, %d",
				s.Builds, s.Hits+s.Misses, s.Entries, numTenants, requests, numTenants)
		}
		if b.countsConnections() {
			conns, err := b.serverConns(ctx, b.tenants...)
			if err != nil {
				t.Fatal(err)
			}
			for tenant, n := range conns {
				if n < 1 || n > maxOpen {
					t.Errorf("tenant %s: %d server connections; want 1 to %d", tenant, n, maxOpen)
				}
			}
			t.Logf("%s: server connections after 200 requests: %d over %d tenants", b.name, b.totalConns(t, b.tenants...), numTenants)
		}
	})
}

// TestPoolLimitsHoldUnderLoad: each tenant's MaxOpenConns holds while more
// callers than that want a connection, counted on the server.
func TestPoolLimitsHoldUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		limits := map[string]int{b.tenants[0]: 1, b.tenants[1]: 2, b.tenants[2]: 3, b.tenants[3]: 5}
		const extra = 3 // callers beyond the limit, who must wait
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.Pool = func(tenant string) sqladapter.PoolSettings {
				return sqladapter.PoolSettings{MaxOpenConns: limits[tenant], MaxIdleConns: limits[tenant]}
			}
		})

		// Sample the server's counts all along and keep the peak per tenant.
		var names []string
		for tenant := range limits {
			names = append(names, tenant)
		}
		peak := map[string]int{}
		stopSampling := make(chan struct{})
		var sampler sync.WaitGroup
		if b.countsConnections() {
			sampler.Go(func() {
				for {
					m, err := b.serverConns(ctx, names...)
					if err == nil {
						for k, n := range m {
							peak[k] = max(peak[k], n)
						}
					}
					select {
					case <-stopSampling:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			})
		}

		release := make(chan struct{})
		errs := make(chan error, 64)
		var wg sync.WaitGroup
		dbs := map[string]*sql.DB{}
		for tenant, limit := range limits {
			l, err := c.Lease(ctx, tenant)
			if err != nil {
				t.Fatalf("Lease(%s): %v", tenant, err)
			}
			t.Cleanup(l.Release)
			db := l.Value()
			dbs[tenant] = db
			for range limit + extra {
				wg.Go(func() {
					conn, err := db.Conn(ctx)
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close()
					if got, err := b.currentDB(ctx, conn); err != nil || got != tenant {
						errs <- fmt.Errorf("tenant %s: currentDB = %q, %v", tenant, got, err)
					}
					<-release
				})
			}
		}

		// Wait until every pool is saturated: limit connections in use and
		// the extra callers waiting for one.
		deadline := time.Now().Add(10 * time.Second)
		for tenant, limit := range limits {
			for {
				s := dbs[tenant].Stats()
				if s.InUse == limit && s.WaitCount >= extra {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("tenant %s: pool not saturated within 10s: %+v", tenant, s)
				}
				time.Sleep(5 * time.Millisecond) // bounded polling
			}
		}
		if b.countsConnections() {
			got := b.waitConns(t, "every tenant at its limit", func(m map[string]int) bool {
				for tenant, limit := range limits {
					if m[tenant] != limit {
						return false
					}
				}
				return true
			}, names...)
			t.Logf("%s: server connections per tenant while saturated: %v (limits %v)", b.name, got, limits)
		}
		for tenant, limit := range limits {
			if s := dbs[tenant].Stats(); s.OpenConnections != limit || s.MaxOpenConnections != limit {
				t.Errorf("tenant %s: Stats() open %d, max %d; want %d", tenant, s.OpenConnections, s.MaxOpenConnections, limit)
			}
		}
		close(release)
		wg.Wait()
		close(stopSampling)
		sampler.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for tenant, limit := range limits {
			if peak[tenant] > limit {
				t.Errorf("tenant %s: peak of %d server connections; want at most MaxOpenConns %d", tenant, peak[tenant], limit)
			}
		}
	})
}

// TestEvictionClosesServerConnections: with MaxEntries 5 over 20 tenants,
// the server connections of every evicted tenant go back to 0 and the
// total stays within MaxEntries x MaxOpenConns.
func TestEvictionClosesServerConnections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		const maxEntries, maxOpen = 5, 3
		var mu sync.Mutex // protects evicted
		evicted := map[string]*sql.DB{}
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.Pool = func(string) sqladapter.PoolSettings { return sqladapter.PoolSettings{MaxOpenConns: maxOpen} }
			o.Cache.MaxEntries = maxEntries
			o.Cache.OnEvict = func(tenant string, db *sql.DB, reason rescache.EvictReason) {
				if reason != rescache.EvictCapacity && reason != rescache.EvictClosed {
					t.Errorf("OnEvict(%s, %v); want reason capacity", tenant, reason)
				}
				mu.Lock()
				evicted[tenant] = db
				mu.Unlock()
			}
		})

		peak := 0
		for _, tenant := range b.tenants {
			l, err := c.Lease(ctx, tenant)
			if err != nil {
				t.Fatalf("Lease(%s): %v", tenant, err)
			}
			db := l.Value()
			// Open maxOpen connections at once, then give them back.
			var conns []*sql.Conn
			for range maxOpen {
				conn, err := db.Conn(ctx)
				if err != nil {
					t.Fatalf("tenant %s: Conn: %v", tenant, err)
				}
				if got, err := b.currentDB(ctx, conn); err != nil || got != tenant {
					t.Fatalf("tenant %s: currentDB = %q, %v", tenant, got, err)
				}
				conns = append(conns, conn)
			}
			for _, conn := range conns {
				conn.Close()
			}
			l.Release()
			if n := c.Len(); n > maxEntries {
				t.Fatalf("Len() = %d; want at most %d", n, maxEntries)
			}
			if b.countsConnections() {
				m := b.waitConns(t, "total within MaxEntries x MaxOpenConns", func(m map[string]int) bool {
					total := 0
					for _, n := range m {
						total += n
					}
					return total <= maxEntries*maxOpen
				}, b.tenants...)
				total := 0
				for _, n := range m {
					total += n
				}
				peak = max(peak, total)
			}
		}

		// OnEvict and the close of an evicted pool run on the cache's hook
		// goroutine, after the Lease that evicted it returned: wait for the
		// last ones.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			done := len(evicted) >= numTenants-maxEntries
			for _, db := range evicted {
				done = done && db.Stats().OpenConnections == 0
			}
			mu.Unlock()
			if done {
				break
			}
		}
		mu.Lock()
		gone := evicted
		evicted = map[string]*sql.DB{}
		mu.Unlock()
		if len(gone) != numTenants-maxEntries {
			t.Errorf("%d tenants evicted; want %d", len(gone), numTenants-maxEntries)
		}
		var goneNames []string
		for tenant, db := range gone {
			goneNames = append(goneNames, tenant)
			if s := db.Stats(); s.OpenConnections != 0 {
				t.Errorf("evicted tenant %s: pool holds %d connections; want 0", tenant, s.OpenConnections)
			}
			if err := db.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "database is closed") {
				t.Errorf("evicted tenant %s: Ping() = %v; want sql: database is closed", tenant, err)
			}
		}
		if b.countsConnections() {
			b.waitNoConns(t, goneNames...)
			t.Logf("%s: peak server connections over 20 tenants with MaxEntries %d, MaxOpenConns %d: %d; evicted tenants: 0; cached tenants: %d",
				b.name, maxEntries, maxOpen, peak, b.totalConns(t, b.tenants...))
		}
	})
}

// TestUnavailableTenant: a tenant whose database does not exist, or whose
// server is down, gets a clear error naming it; the next call tries again;
// other tenants are unaffected.
func TestUnavailableTenant(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		missing := b.newDatabaseName("missing")
		const password = "hunter2-secret"
		var down string // a DSN whose server does not listen
		if b.countsConnections() {
			down = closedPortDSN(t, b)
		}
		var builds *sync.Map
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.PingTimeout = 5 * time.Second
			dsn := o.DSN
			o.DSN = func(ctx context.Context, tenant string) (string, error) {
				if tenant == "down" {
					return down, nil
				}
				d, err := dsn(ctx, tenant)
				if tenant == missing && b.name == "postgres" {
					// With trust authentication the password is ignored:
					// the error must not show it all the same.
					d = strings.Replace(d, "postgres://postgres@", "postgres://postgres:"+password+"@", 1)
				}
				return d, err
			}
			builds = countingDSN(o)
		})

		_, err := c.Get(ctx, missing)
		checkTenantError(t, err, missing, "ping")
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("Get(%s) error %q shows the password", missing, err)
		}
		t.Logf("%s: missing database: %v", b.name, err)
		if _, ok := c.Peek(missing); ok {
			t.Errorf("Peek(%s) found a failed tenant", missing)
		}
		if db, err := c.Get(ctx, b.tenants[0]); err != nil {
			t.Errorf("Get(%s) of a healthy tenant: %v", b.tenants[0], err)
		} else if got, err := b.currentDB(ctx, db); err != nil || got != b.tenants[0] {
			t.Errorf("healthy tenant: currentDB = %q, %v", got, err)
		}

		// The database appears: the next call opens it.
		if err := b.createDatabases(ctx, missing); err != nil {
			t.Fatal(err)
		}
		db, err := c.Get(ctx, missing)
		if err != nil {
			t.Fatalf("Get(%s) after creating it: %v", missing, err)
		}
		if got, err := b.currentDB(ctx, db); err != nil || got != missing {
			t.Errorf("currentDB = %q, %v; want %s", got, err, missing)
		}
		if n := loadCount(builds, missing); n != 2 {
			t.Errorf("tenant %s built %d times; want 2 (one failure, one success)", missing, n)
		}
		c.Invalidate(missing)

		if down == "" {
			return
		}
		for i := range 2 {
			_, err := c.Get(ctx, "down")
			checkTenantError(t, err, "down", "ping")
			if i == 0 {
				t.Logf("%s: server down: %v", b.name, err)
			}
		}
		if n := loadCount(builds, "down"); n != 2 {
			t.Errorf("tenant down built %d times; want 2 (no error is cached)", n)
		}
		if _, err := c.Get(ctx, b.tenants[1]); err != nil {
			t.Errorf("Get(%s) of a healthy tenant while another server is down: %v", b.tenants[1], err)
		}
	})
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

// closedPortDSN returns a DSN of b's kind whose port nothing listens on.
func closedPortDSN(t *testing.T, b *backend) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	switch b.name {
	case "postgres":
		return "postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=5"
	default:
		return "root@tcp(" + addr + ")/test?timeout=5s"
	}
}

// TestLeaseOutlivesEviction: a query holding a lease while its tenant is
// evicted finishes without "sql: database is closed"; the pool closes after
// the release. Without a lease (Get), the same query fails.
func TestLeaseOutlivesEviction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		a, other := b.tenants[0], b.tenants[1]
		evictedCh := make(chan string, 4)
		c := newTenantCache(t, b, func(o *sqladapter.Options[string]) {
			o.Cache.MaxEntries = 1
			o.Cache.OnEvict = func(tenant string, _ *sql.DB, _ rescache.EvictReason) {
				select {
				case evictedCh <- tenant:
				default: // the evictions of Shutdown
				}
			}
		})

		l, err := c.Lease(ctx, a)
		if err != nil {
			t.Fatalf("Lease(%s): %v", a, err)
		}
		db := l.Value()
		// A transaction is in flight when the tenant is evicted.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := b.currentDB(ctx, tx); err != nil || got != a {
			t.Fatalf("currentDB = %q, %v", got, err)
		}
		if _, err := c.Get(ctx, other); err != nil { // evicts a: MaxEntries is 1
			t.Fatalf("Get(%s): %v", other, err)
		}
		if got := <-evictedCh; got != a {
			t.Fatalf("evicted %s; want %s", got, a)
		}
		if _, ok := c.Peek(a); ok {
			t.Errorf("Peek(%s) found the evicted tenant", a)
		}
		if got, err := b.currentDB(ctx, tx); err != nil || got != a {
			t.Errorf("query in the transaction after eviction: %q, %v; want %s", got, err, a)
		}
		if err := tx.Commit(); err != nil {
			t.Errorf("Commit after eviction: %v", err)
		}
		if got, err := b.currentDB(ctx, db); err != nil || got != a {
			t.Errorf("new query on the leased pool after eviction: %q, %v; want %s", got, err, a)
		}
		if b.countsConnections() {
			if n := b.totalConns(t, a); n == 0 {
				t.Errorf("tenant %s: no server connection while leased; want the pool still open", a)
			}
		}

		l.Release()
		// The pool closes at its last release, or once its OnEvict has
		// returned on the cache's hook goroutine if that is later: poll,
		// bounded.
		var perr error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if perr = db.PingContext(ctx); perr != nil {
				break
			}
		}
		if perr == nil || !strings.Contains(perr.Error(), "database is closed") {
			t.Errorf("Ping after the last release = %v; want sql: database is closed", perr)
		}
		if b.countsConnections() {
			b.waitNoConns(t, a)
		}

		// Get takes no lease: eviction closes the pool under the caller.
		dbNoLease, err := c.Get(ctx, a) // evicts other
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, other); err != nil { // evicts a again
			t.Fatal(err)
		}
		// The evicted pool is closed on the cache's hook goroutine (the
		// caller that evicted it does not wait for another tenant's
		// Close): poll, bounded, until it is.
		var qerr error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, qerr = b.currentDB(ctx, dbNoLease); qerr != nil {
				break
			}
		}
		if qerr == nil || !strings.Contains(qerr.Error(), "database is closed") {
			t.Errorf("query on a pool from Get after eviction: %v; want sql: database is closed", qerr)
		}
	})
}
