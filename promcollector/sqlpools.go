package promcollector

import (
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SQLPoolOptions configures [NewSQLPools]. The zero value, like a nil
// pointer, reports one series per open tenant, labelled with fmt.Sprint of
// its key. NewSQLPools copies the options and never modifies them.
type SQLPoolOptions[K comparable] struct {
	// TenantLabel formats a key as the value of the tenant label. Use it to
	// redact or shorten tenant identifiers. Keys that format to the same
	// label are summed into one series. Not called when OmitTenant is set.
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
