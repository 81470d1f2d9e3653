package promcollector

import (
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// These tests feed the SQL pool collector made-up snapshots, to check its
// labelling and its bookkeeping of closed pools without real pools. The
// tests in sqlpools_test.go run it on SQLite pools in a cache.

// snapshots is a source of pool stats that returns the snapshot last set.
type snapshots[K comparable] struct {
	mu  sync.Mutex // protects cur
	cur map[K]sql.DBStats
}

func (s *snapshots[K]) set(m map[K]sql.DBStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = m
}

func (s *snapshots[K]) get() map[K]sql.DBStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// all is the snapshot last set as a sequence, the collector's source.
func (s *snapshots[K]) all(yield func(K, sql.DBStats) bool) {
	for k, st := range s.get() {
		if !yield(k, st) {
			return
		}
	}
}

func TestSQLPoolsPerTenant(t *testing.T) {
	src := &snapshots[int]{}
	src.set(map[int]sql.DBStats{
		7:  {OpenConnections: 3, InUse: 1, Idle: 2, WaitCount: 4, WaitDuration: 1500 * time.Millisecond, MaxIdleClosed: 5, MaxIdleTimeClosed: 6, MaxLifetimeClosed: 7},
		42: {OpenConnections: 1, Idle: 1},
	})
	c := newSQLPools("db", src.all, &SQLPoolOptions[int]{
		Tenant:      true,
		TenantLabel: func(k int) string { return "t" + strings.Repeat("x", k%5) },
	})
	const want = `
# HELP rescache_sql_idle_connections Idle connections.
# TYPE rescache_sql_idle_connections gauge
rescache_sql_idle_connections{cache="db",tenant="txx"} 3
# HELP rescache_sql_in_use_connections Connections in use.
# TYPE rescache_sql_in_use_connections gauge
rescache_sql_in_use_connections{cache="db",tenant="txx"} 1
# HELP rescache_sql_max_idle_closed_total Connections closed because of SetMaxIdleConns.
# TYPE rescache_sql_max_idle_closed_total counter
rescache_sql_max_idle_closed_total{cache="db",tenant="txx"} 5
# HELP rescache_sql_max_idle_time_closed_total Connections closed because of SetConnMaxIdleTime.
# TYPE rescache_sql_max_idle_time_closed_total counter
rescache_sql_max_idle_time_closed_total{cache="db",tenant="txx"} 6
# HELP rescache_sql_max_lifetime_closed_total Connections closed because of SetConnMaxLifetime.
# TYPE rescache_sql_max_lifetime_closed_total counter
rescache_sql_max_lifetime_closed_total{cache="db",tenant="txx"} 7
# HELP rescache_sql_open_connections Established connections, in use and idle.
# TYPE rescache_sql_open_connections gauge
rescache_sql_open_connections{cache="db",tenant="txx"} 4
# HELP rescache_sql_wait_count_total Connections waited for.
# TYPE rescache_sql_wait_count_total counter
rescache_sql_wait_count_total{cache="db",tenant="txx"} 4
# HELP rescache_sql_wait_duration_seconds_total Time blocked waiting for a new connection.
# TYPE rescache_sql_wait_duration_seconds_total counter
rescache_sql_wait_duration_seconds_total{cache="db",tenant="txx"} 1.5
`
	// 7%5 and 42%5 are both 2: the two tenants share the label "txx" and
	// are summed into one series.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	c = newSQLPools("db", src.all, &SQLPoolOptions[int]{Tenant: true})
	if got := testutil.CollectAndCount(c, "rescache_sql_open_connections"); got != 2 {
		t.Errorf("default TenantLabel: %d series of rescache_sql_open_connections; want 2", got)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP rescache_sql_open_connections Established connections, in use and idle.
# TYPE rescache_sql_open_connections gauge
rescache_sql_open_connections{cache="db",tenant="42"} 1
rescache_sql_open_connections{cache="db",tenant="7"} 3
`), "rescache_sql_open_connections"); err != nil {
		t.Error(err)
	}
}

// TestSQLPoolsSumMonotonic walks the summed collector through pools
// closing, being replaced and opening, and checks that the summed counters
// carry the closed pools and the gauges do not.
func TestSQLPoolsSumMonotonic(t *testing.T) {
	src := &snapshots[string]{}
	c := newSQLPools("db", src.all, nil)

	steps := []struct {
		name      string
		pools     map[string]sql.DBStats
		waits     float64 // rescache_sql_wait_count_total
		lifetimes float64 // rescache_sql_max_lifetime_closed_total
		open      float64 // rescache_sql_open_connections
	}{
		{"no pools", nil, 0, 0, 0},
		{"a and b open", map[string]sql.DBStats{
			"a": {OpenConnections: 2, WaitCount: 3, MaxLifetimeClosed: 1},
			"b": {OpenConnections: 1, WaitCount: 5},
		}, 8, 1, 3},
		{"b closed, a waited once more", map[string]sql.DBStats{
			"a": {OpenConnections: 2, WaitCount: 4, MaxLifetimeClosed: 1},
		}, 9, 1, 2},
		{"a replaced, b reopened", map[string]sql.DBStats{
			"a": {OpenConnections: 1, WaitCount: 1},
			"b": {OpenConnections: 1, WaitCount: 2},
		}, 12, 1, 2},
		{"a's new pool replaced by one that counts only lifetime closes", map[string]sql.DBStats{
			"a": {OpenConnections: 1, WaitCount: 0, MaxLifetimeClosed: 3},
			"b": {OpenConnections: 1, WaitCount: 2},
		}, 12, 4, 2},
		{"all closed", nil, 12, 4, 0},
	}
	for _, st := range steps {
		src.set(st.pools)
		got := collectValues(t, c)
		for _, m := range []struct {
			name string
			want float64
		}{
			{"rescache_sql_wait_count_total", st.waits},
			{"rescache_sql_max_lifetime_closed_total", st.lifetimes},
			{"rescache_sql_open_connections", st.open},
		} {
			if got[m.name] != m.want {
				t.Errorf("%s: %s = %v; want %v", st.name, m.name, got[m.name], m.want)
			}
		}
		if n := len(c.last); n != len(st.pools) {
			t.Errorf("%s: the collector remembers %d pools; want %d", st.name, n, len(st.pools))
		}
	}
}

// collectValues collects c once and returns the value of each series by
// metric name; c must report one series per name.
func collectValues(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := make(map[string]float64)
	for _, mf := range mfs {
		if n := len(mf.GetMetric()); n != 1 {
			t.Fatalf("%s has %d series; want 1", mf.GetName(), n)
		}
		m := mf.GetMetric()[0]
		for _, l := range m.GetLabel() {
			if l.GetName() == "tenant" {
				t.Errorf("%s has a tenant label without Tenant", mf.GetName())
			}
		}
		switch {
		case m.Counter != nil:
			got[mf.GetName()] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return got
}

func TestSQLPoolsLint(t *testing.T) {
	src := &snapshots[string]{}
	src.set(map[string]sql.DBStats{"a": {OpenConnections: 1, Idle: 1}})
	for _, omit := range []bool{false, true} {
		c := newSQLPools("db", src.all, &SQLPoolOptions[string]{Tenant: !omit})
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatalf("omit tenant=%v: CollectAndLint: %v", omit, err)
		}
		for _, p := range problems {
			t.Errorf("omit tenant=%v: lint: %s: %s", omit, p.Metric, p.Text)
		}
	}
}

// TestSQLPoolsConcurrentScrapes gathers from several goroutines while the
// pools change, for the race detector, and checks that no scrape sees the
// summed wait count go down.
func TestSQLPoolsConcurrentScrapes(t *testing.T) {
	src := &snapshots[int]{}
	c := newSQLPools("db", src.all, &SQLPoolOptions[int]{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0.0
			for {
				select {
				case <-stop:
					return
				default:
				}
				mfs, err := reg.Gather()
				if err != nil {
					errs <- err.Error()
					return
				}
				for _, mf := range mfs {
					if mf.GetName() != "rescache_sql_wait_count_total" {
						continue
					}
					v := mf.GetMetric()[0].GetCounter().GetValue()
					if v < last {
						errs <- "wait count went down"
						return
					}
					last = v
				}
			}
		}()
	}
	// Tenant i%8's pool has waited i/8 times; every eighth step a pool is
	// replaced by a fresh one.
	for i := range 2000 {
		m := make(map[int]sql.DBStats)
		for k := range 8 {
			if (i+k)%8 != 0 {
				m[k] = sql.DBStats{WaitCount: int64(i % 64)}
			}
		}
		src.set(m)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestSQLPoolsInvalidUTF8 checks that a key that is not valid UTF-8 does
// not break the scrape: its label has the bad bytes replaced.
func TestSQLPoolsInvalidUTF8(t *testing.T) {
	src := &snapshots[string]{}
	src.set(map[string]sql.DBStats{"ac\xffme": {OpenConnections: 1}})
	c := newSQLPools("db", src.all, &SQLPoolOptions[string]{Tenant: true})
	err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP rescache_sql_open_connections Established connections, in use and idle.
# TYPE rescache_sql_open_connections gauge
rescache_sql_open_connections{cache="db",tenant="ac`+"\uFFFD"+`me"} 1
`), "rescache_sql_open_connections")
	if err != nil {
		t.Error(err)
	}
}
