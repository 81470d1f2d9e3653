// Package otelmetrics exports the statistics of a [rescache.Cache], and the
// connection pool statistics of a cache of one *sql.DB per tenant, as
// OpenTelemetry metrics.
//
// Every metric is an asynchronous instrument: [RegisterCache] and
// [RegisterSQLPools] create the instruments on a [metric.Meter] and register
// one callback that reads the cache once per collection, so nothing is
// recorded between collections and the cache's hit path is untouched.
// Each returns the [metric.Registration] of its callback; call Unregister
// when the cache is closed.
//
//	meter := provider.Meter("github.com/rescache/rescache/otelmetrics")
//	reg, err := otelmetrics.RegisterCache(meter, "tenants", cache)
//	...
//	defer reg.Unregister()
//
// The cache's metrics are named rescache.* and carry the attribute
// rescache.cache with the name given to RegisterCache. The pools' metrics
// follow the OpenTelemetry semantic conventions for database clients where
// [sql.DBStats] has the figure they describe (db.client.connection.count
// with db.client.connection.state idle or used, db.client.connection.max),
// and are named rescache.sql.* where it has a figure the conventions do not
// name. The package README lists every metric, and the conventions this
// package cannot follow from DBStats.
//
// This package depends on the core only through the small [Statser]
// interface and a function that returns the pools' stats, so it does not
// import sqladapter; with sqladapter, pass
//
//	func() map[string]sql.DBStats { return sqladapter.PoolStats(cache) }
package otelmetrics
