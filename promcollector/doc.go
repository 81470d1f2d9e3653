// Package promcollector exports the statistics of a [rescache.Cache] to
// Prometheus, and the connection pool statistics of a cache of *sql.DB
// values, one pool per tenant.
//
// [New] returns a [prometheus.Collector] for any cache. Register it with a
// registry and serve the registry with promhttp:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(promcollector.New("tenants", cache))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Every series it reports carries the label cache with the name given to
// New. The counters are read from [rescache.Stats] at each scrape:
//
//	rescache_hits_total                  calls served by a found entry
//	rescache_misses_total                calls that waited for a build
//	rescache_error_hits_total            calls answered with a remembered build error
//	rescache_builds_total                calls of the build function
//	rescache_build_errors_total          builds that failed (error, panic or timeout)
//	rescache_build_panics_total          builds that panicked
//	rescache_evictions_total{reason}     entries that left the cache, one series per reason
//	rescache_closes_total                values closed
//	rescache_close_errors_total          closes that failed
//	rescache_health_checks_total         health checks run
//	rescache_health_check_errors_total   health checks that failed
//
// The gauges are the state at the scrape:
//
//	rescache_entries                     found entries
//	rescache_pending                     builds in flight
//	rescache_leased                      leases not yet released
//
// and rescache_build_duration_seconds is a histogram of build time with a
// count and a sum and only the +Inf bucket (see [New]).
//
// [NewSQLPools] reports the [database/sql.DBStats] of the pools open in a
// cache of *sql.DB, labelled cache and summed over tenants, or labelled
// tenant as well when [SQLPoolOptions].Tenant is set.
package promcollector
