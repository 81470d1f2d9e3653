package promcollector

import (
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// SQLPoolOptions configures [NewSQLPools]. The zero value, like a nil
// pointer, reports one series per open tenant, labelled with fmt.Sprint of
// its key. NewSQLPools copies the options and never modifies them.
type SQLPoolOptions[K comparable] struct {
	// TenantLabel formats a key as the value of the tenant label. Use it to
	// redact or shorten tenant identifiers; give each tenant its own value.
	// Keys that format to the same value are summed into one series, whose
	// counters then drop (a counter reset) whenever one of its pools
	// closes. Not called when OmitTenant is set.
	//
	// default: nil, meaning fmt.Sprint(key).
	TenantLabel func(K) string

	// OmitTenant drops the tenant label: each metric is one series, the sum
	// over the pools of all open tenants. Set it when tenants are many:
	// every tenant label value is a series of its own for each of the eight
	// metrics, and a series lingers in Prometheus's head block for hours
	// after its tenant is evicted, so a few thousand tenants churning
	// through the cache can cost more than the pools they describe.
	//
	// With OmitTenant the counters also stay monotonic across evictions:
	// the collector carries the counters of pools that have been closed
	// (see [NewSQLPools]).
	//
	// default: false, one series per open tenant.
	OmitTenant bool
}

// NewSQLPools returns a collector of the [sql.DBStats] of the pools open in
// c, one *sql.DB per tenant, read with [sqladapter.PoolStats] once per
// scrape. Every series is labelled cache=name, and tenant=TenantLabel(key)
// unless opts.OmitTenant is set. opts may be nil.
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
//   - With a tenant label, a tenant whose pool is evicted has no series
//     until it is opened again, and its counters then restart from zero.
//     Prometheus's rate and increase read that drop as a counter reset, as
//     they do for a restarted process, so rates stay right.
//   - Without a tenant label (OmitTenant), a plain sum over the open pools
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
//
// The collector is safe for concurrent use. With OmitTenant, scrapes of
// one collector are serialized so that each one merges the snapshot it
// took in order.
func NewSQLPools[K comparable](name string, c *rescache.Cache[K, *sql.DB], opts *SQLPoolOptions[K]) prometheus.Collector {
	return newSQLPools(name, func() map[K]sql.DBStats { return sqladapter.PoolStats(c) }, opts)
}

// newSQLPools is NewSQLPools with the source of the stats as a function.
func newSQLPools[K comparable](name string, poolStats func() map[K]sql.DBStats, opts *SQLPoolOptions[K]) *sqlPoolsCollector[K] {
	var o SQLPoolOptions[K]
	if opts != nil {
		o = *opts
	}
	if o.TenantLabel == nil {
		o.TenantLabel = func(k K) string { return fmt.Sprint(k) }
	}
	var variable []string
	if !o.OmitTenant {
		variable = []string{"tenant"}
	}
	l := prometheus.Labels{"cache": name}
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("rescache_sql_"+metric, help, variable, l)
	}
	c := &sqlPoolsCollector[K]{
		poolStats:  poolStats,
		label:      o.TenantLabel,
		omitTenant: o.OmitTenant,

		open:              d("open_connections", "Established connections, in use and idle."),
		inUse:             d("in_use_connections", "Connections in use."),
		idle:              d("idle_connections", "Idle connections."),
		waitCount:         d("wait_count_total", "Connections waited for."),
		waitDuration:      d("wait_duration_seconds_total", "Time blocked waiting for a new connection."),
		maxIdleClosed:     d("max_idle_closed_total", "Connections closed because of SetMaxIdleConns."),
		maxIdleTimeClosed: d("max_idle_time_closed_total", "Connections closed because of SetConnMaxIdleTime."),
		maxLifetimeClosed: d("max_lifetime_closed_total", "Connections closed because of SetConnMaxLifetime."),
	}
	if o.OmitTenant {
		c.last = make(map[K]poolCounters)
	}
	return c
}

// sqlPoolsCollector is the collector returned by NewSQLPools. All fields
// but mu, last and retired are set by newSQLPools and only read afterwards.
type sqlPoolsCollector[K comparable] struct {
	poolStats  func() map[K]sql.DBStats
	label      func(K) string
	omitTenant bool

	open, inUse, idle                                   *prometheus.Desc // gauges
	waitCount, waitDuration                             *prometheus.Desc // counters
	maxIdleClosed, maxIdleTimeClosed, maxLifetimeClosed *prometheus.Desc // counters

	mu sync.Mutex // protects last and retired; used only with omitTenant
	// last holds the counters of each pool open at the previous scrape.
	last map[K]poolCounters
	// retired sums the last seen counters of pools that have closed or
	// been replaced since the collector was created; zero at first.
	retired poolCounters
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
	for _, d := range []*prometheus.Desc{
		c.open, c.inUse, c.idle,
		c.waitCount, c.waitDuration,
		c.maxIdleClosed, c.maxIdleTimeClosed, c.maxLifetimeClosed,
	} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *sqlPoolsCollector[K]) Collect(ch chan<- prometheus.Metric) {
	if c.omitTenant {
		c.send(ch, c.sum())
		return
	}
	byTenant := make(map[string]*poolSample)
	for k, st := range c.poolStats() {
		t := c.label(k)
		if !utf8.ValidString(t) {
			t = strings.ToValidUTF8(t, "\uFFFD") // a label value must be UTF-8
		}
		s := byTenant[t]
		if s == nil {
			s = new(poolSample)
			byTenant[t] = s
		}
		s.addStats(st)
	}
	for t, s := range byTenant {
		c.send(ch, *s, t)
	}
}

// sum returns the sample of all pools for OmitTenant: the gauges of the
// open pools, and their counters plus those of the pools closed since the
// collector was created.
func (c *sqlPoolsCollector[K]) sum() poolSample {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.poolStats()
	for k, prev := range c.last {
		st, ok := now[k]
		if !ok || countersOf(st).below(prev) {
			c.retired.add(prev)
		}
		if !ok {
			delete(c.last, k)
		}
	}
	s := poolSample{poolCounters: c.retired}
	for k, st := range now {
		c.last[k] = countersOf(st)
		s.addStats(st)
	}
	return s
}

// send reports one sample; labels are the values of the variable labels.
func (c *sqlPoolsCollector[K]) send(ch chan<- prometheus.Metric, s poolSample, labels ...string) {
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.open, s.open)
	gauge(c.inUse, s.inUse)
	gauge(c.idle, s.idle)
	counter(c.waitCount, float64(s.waitCount))
	counter(c.waitDuration, s.waitDuration.Seconds())
	counter(c.maxIdleClosed, float64(s.maxIdleClosed))
	counter(c.maxIdleTimeClosed, float64(s.maxIdleTimeClosed))
	counter(c.maxLifetimeClosed, float64(s.maxLifetimeClosed))
}
