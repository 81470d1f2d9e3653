package promcollector

import (
	"database/sql"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// NewSQLBudget returns a collector of the connection budget
// (sqladapter.Options.MaxTotalConns) of c, a cache made by
// [sqladapter.New], read with [sqladapter.PoolBudget] once per scrape. Every
// series is labelled cache=name; a cache without a budget reports nothing.
//
// Gauges rescache_sql_budget_max_connections,
// rescache_sql_budget_held_connections and rescache_sql_budget_waiting are
// the budget's size, the connections all pools hold open, draining pools
// included, and the connections being waited for. Counters
// rescache_sql_budget_wait_count_total,
// rescache_sql_budget_wait_duration_seconds_total,
// rescache_sql_budget_reclaimed_total and
// rescache_sql_budget_handed_over_total count the connections that found
// the budget full, the time they waited, the idle connections of other
// tenants closed to make room, and the connections closed on their return
// because one was awaited.
//
// For a fleet budget (sqladapter.Options.Budget of
// budget/redisbudget), rescache_sql_budget_fleet_held_connections is the
// places the whole fleet holds (as last seen), rescache_sql_budget_fallback
// is 1 while the process is on its local fallback share, and counters
// rescache_sql_budget_renew_failures_total and
// rescache_sql_budget_fallbacks_total count failed lease renewals and
// switches to that share; for a budget of one process they are Held, 0, 0
// and 0.
//
// The collector is safe for concurrent use.
func NewSQLBudget[K comparable](name string, c *rescache.Cache[K, *sql.DB]) prometheus.Collector {
	l := prometheus.Labels{"cache": name}
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("rescache_sql_budget_"+metric, help, nil, l)
	}
	return &sqlBudgetCollector{
		stats:        func() sqladapter.BudgetStats { return sqladapter.PoolBudget(c) },
		max:          d("max_connections", "Size of the connection budget of all pools."),
		held:         d("held_connections", "Connections open in all pools, draining pools included."),
		waiting:      d("waiting", "Connections being waited for."),
		waitCount:    d("wait_count_total", "Connections that found the budget full."),
		waitDuration: d("wait_duration_seconds_total", "Time connections waited for the budget."),
		reclaimed:    d("reclaimed_total", "Idle connections of other tenants closed to make room."),
		handedOver:   d("handed_over_total", "Connections closed on their return because one was awaited."),
		fleetHeld:    d("fleet_held_connections", "Places the whole fleet holds, as last seen (a fleet budget); Held otherwise."),
		fallback:     d("fallback", "1 while the process is on its local fallback share (a fleet budget that cannot reach its Redis)."),
		renewFails:   d("renew_failures_total", "Failed lease renewals of a fleet budget."),
		fallbacks:    d("fallbacks_total", "Switches of a fleet budget to its local fallback share."),
	}
}

// sqlBudgetCollector is the collector returned by NewSQLBudget; its fields
// are set once and only read afterwards.
type sqlBudgetCollector struct {
	stats                                                                 func() sqladapter.BudgetStats
	max, held, waiting, fleetHeld, fallback                               *prometheus.Desc // gauges
	waitCount, waitDuration, reclaimed, handedOver, renewFails, fallbacks *prometheus.Desc // counters
}

func (c *sqlBudgetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.max, c.held, c.waiting, c.fleetHeld, c.fallback, c.waitCount, c.waitDuration, c.reclaimed, c.handedOver, c.renewFails, c.fallbacks} {
		ch <- d
	}
}

func (c *sqlBudgetCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	if s.MaxTotalConns == 0 {
		return
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.max, float64(s.MaxTotalConns))
	gauge(c.held, float64(s.Held))
	gauge(c.waiting, float64(s.Waiting))
	counter(c.waitCount, float64(s.WaitCount))
	counter(c.waitDuration, s.WaitDuration.Seconds())
	counter(c.reclaimed, float64(s.Reclaimed))
	counter(c.handedOver, float64(s.HandedOver))
	gauge(c.fleetHeld, float64(s.FleetHeld))
	fb := 0.0
	if s.Fallback {
		fb = 1
	}
	gauge(c.fallback, fb)
	counter(c.renewFails, float64(s.RenewFailures))
	counter(c.fallbacks, float64(s.Fallbacks))
}
