package promcollector

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rescache/rescache"
)

// Statser is what [New] reads: anything with a Stats method. Every
// *rescache.Cache[K, V] satisfies it, whatever K and V.
type Statser interface {
	Stats() rescache.Stats
}

// New returns a collector that exports the [rescache.Stats] of c, every
// series labelled cache=name. Register one collector per cache, each with
// its own name: two collectors with the same name in one registry collide
// and registration fails.
//
// Each scrape calls c.Stats once; the collector keeps no state of its own,
// so it costs the cache nothing between scrapes. It is safe for concurrent
// use, as the Prometheus registry requires.
//
// The metrics are described in the package documentation. Build latency is
// exported as the histogram rescache_build_duration_seconds, so that it can
// be summed across instances and caches. [rescache.Stats] keeps a count and
// a total of build time, not a distribution, so the histogram has no bucket
// but +Inf: _count and _sum, from which rate(_sum) / rate(_count) gives the
// mean build latency over any window. _count is [rescache.Stats].Builds,
// which counts a build as it starts, and _sum is [rescache.Stats].BuildTime,
// which grows as a build ends; a build in flight at a scrape is in the count
// but not yet in the sum.
func New(name string, c Statser) prometheus.Collector {
	l := prometheus.Labels{"cache": name}
	d := func(metric, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("rescache_"+metric, help, variable, l)
	}
	sc := &statsCollector{
		src: c,

		hits:              d("hits_total", "Calls of Get, Lease and Acquire served by a found entry."),
		misses:            d("misses_total", "Calls of Get, Lease and Acquire that waited for a build, started or joined."),
		errorHits:         d("error_hits_total", "Calls answered with a remembered build error (ErrorTTL)."),
		builds:            d("builds_total", "Calls of the build function."),
		buildErrors:       d("build_errors_total", "Builds that failed: returned an error, panicked or ran out of time."),
		buildPanics:       d("build_panics_total", "Builds that panicked (also counted in rescache_build_errors_total)."),
		evictions:         d("evictions_total", "Found entries that left the cache, by reason.", "reason"),
		closes:            d("closes_total", "Values closed: calls of the Closer hook, failed or not."),
		closeErrors:       d("close_errors_total", "Calls of the Closer hook that returned an error or panicked."),
		healthChecks:      d("health_checks_total", "Health checks run on idle entries."),
		healthCheckErrors: d("health_check_errors_total", "Health checks that failed; each one evicts its entry (reason=\"unhealthy\")."),
		entries:           d("entries", "Found entries in the cache."),
		pending:           d("pending", "Builds started whose build function has not returned (waiting for a slot or running)."),
		building:          d("building", "Build functions running."),
		leased:            d("leased", "Leases (Lease, Acquire) not yet released."),
		refreshes:         d("refreshes_total", "Refreshes finished (Refresh, RefreshAfter), whatever their outcome."),
		refreshErrors:     d("refresh_errors_total", "Refreshes that failed; the old value stayed."),
		leaseLeaks:        d("lease_leaks_total", "Leases held past LeakThreshold, or dropped without Release."),
		buildDuration:     d("build_duration_seconds", "Time spent in finished builds; _sum / _count is the mean build latency. Only the +Inf bucket: the cache keeps a count and a total."),

		reasons: reasonLabels(),
	}
	sc.descs = []*prometheus.Desc{
		sc.hits, sc.misses, sc.errorHits,
		sc.builds, sc.buildErrors, sc.buildPanics,
		sc.evictions,
		sc.closes, sc.closeErrors,
		sc.healthChecks, sc.healthCheckErrors,
		sc.entries, sc.pending, sc.building, sc.leased,
		sc.refreshes, sc.refreshErrors, sc.leaseLeaks,
		sc.buildDuration,
	}
	return sc
}

// statsCollector is the collector returned by New. Its fields are set once
// by New and only read afterwards.
type statsCollector struct {
	src Statser

	hits, misses, errorHits                 *prometheus.Desc
	builds, buildErrors, buildPanics        *prometheus.Desc
	evictions                               *prometheus.Desc // variable label reason
	closes, closeErrors                     *prometheus.Desc
	healthChecks, healthCheckErrors         *prometheus.Desc
	entries, pending, leased, buildDuration *prometheus.Desc
	building, refreshes, refreshErrors      *prometheus.Desc
	leaseLeaks                              *prometheus.Desc
	descs                                   []*prometheus.Desc // all of the above

	reasons []reasonLabel
}

// reasonLabel pairs an eviction reason with its label value.
type reasonLabel struct {
	reason rescache.EvictReason
	label  string
}

// reasonLabels returns every eviction reason with its label value, so that
// every reason has a series (at 0 until it happens) and a query for a reason
// that has not occurred yet finds a value instead of nothing.
func reasonLabels() []reasonLabel {
	rs := rescache.EvictReasons()
	out := make([]reasonLabel, len(rs))
	for i, r := range rs {
		out[i] = reasonLabel{r, r.String()}
	}
	return out
}

// Describe implements [prometheus.Collector].
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]. It takes one snapshot of the
// cache's Stats and reports every metric from it. Besides the Stats
// snapshot (whose EvictionsByReason map is the cache's), a scrape allocates
// only the metrics it sends.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	counter(ch, c.hits, s.Hits)
	counter(ch, c.misses, s.Misses)
	counter(ch, c.errorHits, s.ErrorHits)
	counter(ch, c.builds, s.Builds)
	counter(ch, c.buildErrors, s.BuildErrors)
	counter(ch, c.buildPanics, s.BuildPanics)
	for _, r := range c.reasons {
		counter(ch, c.evictions, s.EvictionsByReason[r.reason], r.label)
	}
	counter(ch, c.closes, s.Closes)
	counter(ch, c.closeErrors, s.CloseErrors)
	counter(ch, c.healthChecks, s.HealthChecks)
	counter(ch, c.healthCheckErrors, s.HealthCheckErrors)
	gauge(ch, c.entries, s.Entries)
	gauge(ch, c.pending, s.Pending)
	gauge(ch, c.building, s.Building)
	gauge(ch, c.leased, s.Leased)
	counter(ch, c.refreshes, s.Refreshes)
	counter(ch, c.refreshErrors, s.RefreshErrors)
	counter(ch, c.leaseLeaks, s.LeaseLeaks)
	ch <- prometheus.MustNewConstHistogram(c.buildDuration, s.Builds, s.BuildTime.Seconds(), nil)
}

// counter sends a counter of d with value v.
func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

// gauge sends a gauge of d with value v.
func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v int, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
}
