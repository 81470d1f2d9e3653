package promcollector

import (
	"database/sql"
	"fmt"
	"iter"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
)

// SQLPoolOptions configures [NewSQLPools]. The zero value, like a nil
// pointer, reports one series per metric, the sum over the pools of all open
// tenants, without a tenant label. NewSQLPools copies the options and never
// modifies them.
type SQLPoolOptions[K comparable] struct {
	// Tenant adds the label tenant: one series per open tenant for each of
	// the eight metrics, instead of one sum. Turn it on only when tenants
	// are few: every tenant label value is a series of its own, and a
	// series lingers in Prometheus's head block for hours after its tenant
	// is evicted, so a few thousand tenants churning through the cache can
	// cost more than the pools they describe (100 open pools make 800
	// series).
	//
	// default: false, one sum over the open pools, whose counters stay
	// monotonic across evictions (see [NewSQLPools]).
	Tenant bool

	// TenantLabel formats a key as the value of the tenant label. Use it to
	// redact or shorten tenant identifiers; give each tenant its own value.
	// Keys that format to the same value are summed into one series, whose
	// counters then drop (a counter reset) whenever one of its pools
	// closes. Not called unless Tenant is set.
	//
	// default: nil, meaning fmt.Sprint(key).
	TenantLabel func(K) string
}

// NewSQLPools returns a collector of the [sql.DBStats] of the pools open in
// c, one *sql.DB per tenant, read with c.Range and DB.Stats once per
// scrape. Every series is labelled cache=name, and tenant=TenantLabel(key)
// when opts.Tenant is set. opts may be nil.
//
// Gauges rescache_sql_open_connections, rescache_sql_in_use_connections and
// rescache_sql_idle_connections are the state of the pools at the scrape.
// Counters rescache_sql_wait_count_total,
// rescache_sql_wait_duration_seconds_total,
// rescache_sql_max_idle_closed_total,
// rescache_sql_max_idle_time_closed_total and
// rescache_sql_max_lifetime_closed_total come from the pools' own counters,
// which start at zero when a pool is opened. So:
//
//   - Without a tenant label (the default), a plain sum over the open pools
//     would fall whenever a pool closes, which rate would misread as a reset
//     and turn into a spike. Instead the collector remembers each open
//     pool's counters at the previous scrape and, when the pool is gone at
//     the next one (or its counters went down, meaning the tenant's pool was
//     replaced), adds them to a running total of closed pools, reported
//     with the open pools. The sum therefore never decreases. What a pool
//     counted between the last scrape that saw it and its close is lost,
//     and a pool replaced between two scrapes whose successor has already
//     counted past it goes unnoticed; the sums undercount in those cases
//     and never overcount. This bookkeeping holds one entry per open pool.
//   - With a tenant label (Tenant), a tenant whose pool is evicted has no
//     series until it is opened again, and its counters then restart from
//     zero. Prometheus's rate and increase read that drop as a counter
//     reset, as they do for a restarted process, so rates stay right.
//
// The collector is safe for concurrent use; scrapes of one collector are
// serialized, so that each one merges the snapshot it took in order. A
// scrape allocates no map of its own: it ranges over the cache and keeps
// its bookkeeping between scrapes.
func NewSQLPools[K comparable](name string, c *rescache.Cache[K, *sql.DB], opts *SQLPoolOptions[K]) prometheus.Collector {
	return newSQLPools(name, func(yield func(K, sql.DBStats) bool) {
		c.Range(func(k K, db *sql.DB) bool { return yield(k, db.Stats()) })
	}, opts)
}

// NewSQLPoolsFunc is [NewSQLPools] for pools that are not a cache of
// *sql.DB: stats returns the figures of every open tenant's pool, in
// sql.DBStats form, once per scrape. pgxadapter.DBStats gives those of a
// cache of pgxpool.Pool, so that this package need not import pgx.
func NewSQLPoolsFunc[K comparable](name string, stats func() map[K]sql.DBStats, opts *SQLPoolOptions[K]) prometheus.Collector {
	return newSQLPools(name, func(yield func(K, sql.DBStats) bool) {
		for k, s := range stats() {
			if !yield(k, s) {
				return
			}
		}
	}, opts)
}

// newSQLPools is NewSQLPools with the source of the stats as a sequence.
func newSQLPools[K comparable](name string, pools iter.Seq2[K, sql.DBStats], opts *SQLPoolOptions[K]) *sqlPoolsCollector[K] {
	var o SQLPoolOptions[K]
	if opts != nil {
		o = *opts
	}
	if o.TenantLabel == nil {
		o.TenantLabel = func(k K) string { return fmt.Sprint(k) }
	}
	var variable []string
	if o.Tenant {
		variable = []string{"tenant"}
	}
	l := prometheus.Labels{"cache": name}
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("rescache_sql_"+metric, help, variable, l)
	}
	c := &sqlPoolsCollector[K]{
		pools:  pools,
		label:  o.TenantLabel,
		tenant: o.Tenant,

		open:              d("open_connections", "Established connections, in use and idle."),
		inUse:             d("in_use_connections", "Connections in use."),
		idle:              d("idle_connections", "Idle connections."),
		waitCount:         d("wait_count_total", "Connections waited for."),
		waitDuration:      d("wait_duration_seconds_total", "Time blocked waiting for a new connection."),
		maxIdleClosed:     d("max_idle_closed_total", "Connections closed because of SetMaxIdleConns."),
		maxIdleTimeClosed: d("max_idle_time_closed_total", "Connections closed because of SetConnMaxIdleTime."),
		maxLifetimeClosed: d("max_lifetime_closed_total", "Connections closed because of SetConnMaxLifetime."),

		last:     make(map[K]lastPool),
		byTenant: make(map[string]poolSample),
	}
	c.descs = []*prometheus.Desc{
		c.open, c.inUse, c.idle,
		c.waitCount, c.waitDuration,
		c.maxIdleClosed, c.maxIdleTimeClosed, c.maxLifetimeClosed,
	}
	return c
}

// sqlPoolsCollector is the collector returned by NewSQLPools. All fields
// but mu and the fields after it are set by newSQLPools and only read
// afterwards.
type sqlPoolsCollector[K comparable] struct {
	pools  iter.Seq2[K, sql.DBStats]
	label  func(K) string
	tenant bool

	open, inUse, idle                                   *prometheus.Desc // gauges
	waitCount, waitDuration                             *prometheus.Desc // counters
	maxIdleClosed, maxIdleTimeClosed, maxLifetimeClosed *prometheus.Desc // counters
	descs                                               []*prometheus.Desc

	mu sync.Mutex // protects the fields below; held through a scrape
	// scrapes counts scrapes; a pool in last whose seen is not the current
	// scrape's number has closed.
	scrapes uint64
	// last holds the counters of each pool open at the previous scrape;
	// used without a tenant label.
	last map[K]lastPool
	// retired sums the last seen counters of pools that have closed or
	// been replaced since the collector was created; zero at first.
	retired poolCounters
	// byTenant is the per-scrape sum of each tenant label value, kept
	// between scrapes (cleared, not remade) so that a scrape allocates no
	// map; used with a tenant label.
	byTenant map[string]poolSample
}

// lastPool is what the collector remembers of an open pool.
type lastPool struct {
	poolCounters
	seen uint64 // the scrape that last saw the pool
}

// poolCounters are the counters of one sql.DBStats, or a sum of them.
type poolCounters struct {
	waitCount         int64
	waitDuration      time.Duration
	maxIdleClosed     int64
	maxIdleTimeClosed int64
	maxLifetimeClosed int64
}

func countersOf(s sql.DBStats) poolCounters {
	return poolCounters{s.WaitCount, s.WaitDuration, s.MaxIdleClosed, s.MaxIdleTimeClosed, s.MaxLifetimeClosed}
}

func (p *poolCounters) add(q poolCounters) {
	p.waitCount += q.waitCount
	p.waitDuration += q.waitDuration
	p.maxIdleClosed += q.maxIdleClosed
	p.maxIdleTimeClosed += q.maxIdleTimeClosed
	p.maxLifetimeClosed += q.maxLifetimeClosed
}

// below reports whether any counter of p is lower than in q: p cannot be a
// later reading of the same pool as q.
func (p poolCounters) below(q poolCounters) bool {
	return p.waitCount < q.waitCount ||
		p.waitDuration < q.waitDuration ||
		p.maxIdleClosed < q.maxIdleClosed ||
		p.maxIdleTimeClosed < q.maxIdleTimeClosed ||
		p.maxLifetimeClosed < q.maxLifetimeClosed
}

// poolSample is what one series reports: the gauges and counters of one
// tenant's pool, or a sum of pools.
type poolSample struct {
	open, inUse, idle int
	poolCounters
}

func (s *poolSample) addStats(st sql.DBStats) {
	s.open += st.OpenConnections
	s.inUse += st.InUse
	s.idle += st.Idle
	s.add(countersOf(st))
}

// Describe implements [prometheus.Collector].
func (c *sqlPoolsCollector[K]) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *sqlPoolsCollector[K]) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tenant {
		c.send(ch, c.sumLocked())
		return
	}
	clear(c.byTenant)
	for k, st := range c.pools {
		t := c.label(k)
		if !utf8.ValidString(t) {
			t = strings.ToValidUTF8(t, "\uFFFD") // a label value must be UTF-8
		}
		s := c.byTenant[t]
		s.addStats(st)
		c.byTenant[t] = s
	}
	for t, s := range c.byTenant {
		c.send(ch, s, t)
	}
}

// sumLocked returns the sample of all pools without a tenant label: the
// gauges of the open pools, and their counters plus those of the pools
// closed since the collector was created.
func (c *sqlPoolsCollector[K]) sumLocked() poolSample {
	c.scrapes++
	s := poolSample{}
	for k, st := range c.pools {
		now := countersOf(st)
		if prev, ok := c.last[k]; ok && now.below(prev.poolCounters) {
			c.retired.add(prev.poolCounters) // the tenant's pool was replaced
		}
		c.last[k] = lastPool{now, c.scrapes}
		s.addStats(st)
	}
	for k, p := range c.last {
		if p.seen != c.scrapes { // closed since the previous scrape
			c.retired.add(p.poolCounters)
			delete(c.last, k)
		}
	}
	s.add(c.retired)
	return s
}

// send reports one sample; labels are the values of the variable labels.
func (c *sqlPoolsCollector[K]) send(ch chan<- prometheus.Metric, s poolSample, labels ...string) {
	gauge(ch, c.open, s.open, labels...)
	gauge(ch, c.inUse, s.inUse, labels...)
	gauge(ch, c.idle, s.idle, labels...)
	counter(ch, c.waitCount, uint64(s.waitCount), labels...)
	ch <- prometheus.MustNewConstMetric(c.waitDuration, prometheus.CounterValue, s.waitDuration.Seconds(), labels...)
	counter(ch, c.maxIdleClosed, uint64(s.maxIdleClosed), labels...)
	counter(ch, c.maxIdleTimeClosed, uint64(s.maxIdleTimeClosed), labels...)
	counter(ch, c.maxLifetimeClosed, uint64(s.maxLifetimeClosed), labels...)
}
