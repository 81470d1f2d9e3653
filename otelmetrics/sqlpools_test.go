package otelmetrics_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rescache/rescache/otelmetrics"
)

// pools is a settable source of per-tenant stats.
type pools struct {
	mu sync.Mutex // protects m
	m  map[string]sql.DBStats
}

func (p *pools) set(m map[string]sql.DBStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m = m
}

func (p *pools) stats() map[string]sql.DBStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m
}

const poolName = "db.client.connection.pool.name=tenants"

func TestRegisterSQLPoolsSumByDefault(t *testing.T) {
	mp, r := newReader(t)
	src := &pools{}
	src.set(map[string]sql.DBStats{
		"acme":   {MaxOpenConnections: 4, OpenConnections: 3, InUse: 2, Idle: 1, WaitCount: 5, WaitDuration: 2 * time.Second, MaxIdleClosed: 1, MaxLifetimeClosed: 2},
		"globex": {MaxOpenConnections: 6, OpenConnections: 1, InUse: 0, Idle: 1, WaitCount: 1, WaitDuration: time.Second, MaxIdleTimeClosed: 3},
	})
	if _, err := otelmetrics.RegisterSQLPools(mp.Meter("test"), "tenants", src.stats, nil); err != nil {
		t.Fatalf("RegisterSQLPools: %v", err)
	}
	want := []point{
		{"db.client.connection.count", "updown", "db.client.connection.pool.name=tenants,db.client.connection.state=idle", 2},
		{"db.client.connection.count", "updown", "db.client.connection.pool.name=tenants,db.client.connection.state=used", 2},
		{"db.client.connection.max", "updown", poolName, 10},
		{"rescache.sql.connection.closed", "counter", poolName + ",rescache.sql.close.reason=max_idle", 1},
		{"rescache.sql.connection.closed", "counter", poolName + ",rescache.sql.close.reason=max_idle_time", 3},
		{"rescache.sql.connection.closed", "counter", poolName + ",rescache.sql.close.reason=max_lifetime", 2},
		{"rescache.sql.connection.wait_duration", "counter", poolName, 3},
		{"rescache.sql.connection.waits", "counter", poolName, 6},
	}
	sortPoints(want)
	got := collect(t, r)
	if pointsString(got) != pointsString(want) {
		t.Errorf("collection:\n%swant:\n%s", pointsString(got), pointsString(want))
	}

	// globex is evicted and acme's pool replaced by a fresh one: the sums
	// keep what the closed pools counted, so they never go down.
	src.set(map[string]sql.DBStats{"acme": {MaxOpenConnections: 4, InUse: 1, WaitCount: 1}})
	got = collect(t, r)
	if v, _ := value(got, "rescache.sql.connection.waits", poolName); v != 7 {
		t.Errorf("waits after evicting globex and replacing acme = %v; want 5 + 1 (closed) + 1 (new acme) = 7", v)
	}
	if v, _ := value(got, "db.client.connection.count", poolName+",db.client.connection.state=used"); v != 1 {
		t.Errorf("used connections = %v; want 1", v)
	}
}

func TestRegisterSQLPoolsUnlimitedHasNoMax(t *testing.T) {
	mp, r := newReader(t)
	src := &pools{}
	src.set(map[string]sql.DBStats{"acme": {MaxOpenConnections: 4}, "globex": {}})
	if _, err := otelmetrics.RegisterSQLPools(mp.Meter("test"), "tenants", src.stats,
		&otelmetrics.SQLPoolOptions[string]{Tenant: true}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, r)
	if v, ok := value(got, "db.client.connection.max", poolName+",rescache.tenant=acme"); !ok || v != 4 {
		t.Errorf("max of acme = %v, %v; want 4", v, ok)
	}
	if v, ok := value(got, "db.client.connection.max", poolName+",rescache.tenant=globex"); ok {
		t.Errorf("max of globex (no limit) = %v; want no point", v)
	}
}

func TestRegisterSQLPoolsTenantOptIn(t *testing.T) {
	mp, r := newReader(t)
	src := &pools{}
	src.set(map[string]sql.DBStats{
		"acme":   {MaxOpenConnections: 2, InUse: 2},
		"globex": {MaxOpenConnections: 2, Idle: 1},
		"GLOBEX": {MaxOpenConnections: 2, Idle: 1},
	})
	_, err := otelmetrics.RegisterSQLPools(mp.Meter("test"), "tenants", src.stats, &otelmetrics.SQLPoolOptions[string]{
		Tenant:      true,
		TenantValue: strings.ToLower,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, r)
	for _, tc := range []struct {
		attrs string
		want  float64
	}{
		{poolName + ",db.client.connection.state=used,rescache.tenant=acme", 2},
		{poolName + ",db.client.connection.state=idle,rescache.tenant=acme", 0},
		{poolName + ",db.client.connection.state=idle,rescache.tenant=globex", 2}, // two keys, one value: summed
	} {
		if v, ok := value(got, "db.client.connection.count", tc.attrs); !ok || v != tc.want {
			t.Errorf("db.client.connection.count{%s} = %v, %v; want %v", tc.attrs, v, ok, tc.want)
		}
	}
	if len(got) != 2*8 {
		t.Errorf("collection has %d points; want 8 for each of 2 tenants:\n%s", len(got), pointsString(got))
	}

	// An evicted tenant has no points.
	src.set(map[string]sql.DBStats{"acme": {MaxOpenConnections: 2}})
	for _, p := range collect(t, r) {
		if strings.Contains(p.attrs, "globex") {
			t.Errorf("point of evicted tenant globex: %v", p)
		}
	}
}

func TestRegisterSQLPoolsNil(t *testing.T) {
	mp, _ := newReader(t)
	_, err := otelmetrics.RegisterSQLPools[string](mp.Meter("test"), "tenants", nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "otelmetrics: ") {
		t.Errorf("RegisterSQLPools(nil) = %v; want an otelmetrics error", err)
	}
}

// TestRegisterSQLPoolsRealDB reads a real *sql.DB (over a driver that
// makes do-nothing connections) with one connection held.
func TestRegisterSQLPoolsRealDB(t *testing.T) {
	db := sql.OpenDB(nopConnector{})
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(3)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	mp, r := newReader(t)
	_, err = otelmetrics.RegisterSQLPools(mp.Meter("test"), "tenants",
		func() map[string]sql.DBStats { return map[string]sql.DBStats{"acme": db.Stats()} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, r)
	if v, _ := value(got, "db.client.connection.count", poolName+",db.client.connection.state=used"); v != 1 {
		t.Errorf("used connections = %v; want 1 (the held conn)", v)
	}
	if v, _ := value(got, "db.client.connection.max", poolName); v != 3 {
		t.Errorf("max connections = %v; want 3", v)
	}
}

// nopConnector makes connections that can do nothing but close.
type nopConnector struct{}

func (nopConnector) Connect(context.Context) (driver.Conn, error) { return nopConn{}, nil }
func (nopConnector) Driver() driver.Driver                        { return nopDriver{} }

type nopDriver struct{}

func (nopDriver) Open(string) (driver.Conn, error) { return nopConn{}, nil }

type nopConn struct{}

var errNop = errors.New("nop driver: not supported")

func (nopConn) Prepare(string) (driver.Stmt, error) { return nil, errNop }
func (nopConn) Close() error                        { return nil }
func (nopConn) Begin() (driver.Tx, error)           { return nil, errNop }
