package otelmetrics

import (
	"context"
	"errors"
	"fmt"

	"github.com/rescache/rescache"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Statser is what [RegisterCache] reads: anything with a Stats method.
// Every *rescache.Cache[K, V] satisfies it, whatever K and V.
type Statser interface {
	Stats() rescache.Stats
}

// Attribute keys set by this package.
const (
	// CacheKey names the cache, as given to RegisterCache and
	// RegisterSQLPools.
	CacheKey = attribute.Key("rescache.cache")
	// EvictReasonKey is the reason of rescache.evictions, the
	// [rescache.EvictReason] in lower case ("capacity", "idle", ...).
	EvictReasonKey = attribute.Key("rescache.evict.reason")
	// TenantKey is the tenant of a pool, set only when
	// [SQLPoolOptions].Tenant is.
	TenantKey = attribute.Key("rescache.tenant")
)

// RegisterCache creates on meter the rescache.* instruments and registers a
// callback that reports the [rescache.Stats] of c at each collection, every
// point with the attribute rescache.cache=name. The callback calls c.Stats
// once per collection and keeps nothing between collections.
//
// Counters (monotonic, since the cache was created): rescache.hits,
// rescache.misses, rescache.error_hits, rescache.builds,
// rescache.build.errors, rescache.build.panics, rescache.build.time
// (seconds spent in finished builds), rescache.evictions (one point per
// [rescache.EvictReason], attribute rescache.evict.reason),
// rescache.closes, rescache.close.errors, rescache.health_checks and
// rescache.health_check.errors. Up-down counters (the state at the
// collection): rescache.entries, rescache.pending and rescache.leased.
//
// The meter's provider decides when collections happen; the callback is
// safe to run concurrently with the cache. Call Unregister on the returned
// registration to stop reporting c. An error is returned when meter cannot
// create an instrument or register the callback; nothing stays registered
// then.
func RegisterCache(meter metric.Meter, name string, c Statser) (metric.Registration, error) {
	if c == nil {
		return nil, errors.New("otelmetrics: RegisterCache with a nil Statser")
	}
	in := &instruments{meter: meter}
	counter, gauge := in.counter, in.gauge
	hits := counter("rescache.hits", "{call}", "Calls of Get, Lease and Acquire served by a found entry.")
	misses := counter("rescache.misses", "{call}", "Calls of Get, Lease and Acquire that waited for a build, started or joined.")
	errorHits := counter("rescache.error_hits", "{call}", "Calls answered with a remembered build error (ErrorTTL).")
	builds := counter("rescache.builds", "{build}", "Calls of the build function.")
	buildErrors := counter("rescache.build.errors", "{build}", "Builds that failed: returned an error, panicked or ran out of time.")
	buildPanics := counter("rescache.build.panics", "{build}", "Builds that panicked (also counted in rescache.build.errors).")
	buildTime := in.seconds("rescache.build.time", "Time spent in finished builds; divided by rescache.builds, the mean build latency.")
	evictions := counter("rescache.evictions", "{entry}", "Found entries that left the cache, by reason.")
	closes := counter("rescache.closes", "{value}", "Values closed: calls of the Closer hook, failed or not.")
	closeErrors := counter("rescache.close.errors", "{value}", "Calls of the Closer hook that returned an error or panicked.")
	healthChecks := counter("rescache.health_checks", "{check}", "Health checks run on idle entries.")
	healthCheckErrors := counter("rescache.health_check.errors", "{check}", "Health checks that failed; each one evicts its entry.")
	entries := gauge("rescache.entries", "{entry}", "Found entries in the cache.")
	pending := gauge("rescache.pending", "{build}", "Builds started whose build function has not returned (waiting for a slot or running).")
	building := gauge("rescache.building", "{build}", "Build functions running.")
	leased := gauge("rescache.leased", "{lease}", "Leases (Lease, Acquire) not yet released.")
	refreshes := counter("rescache.refreshes", "{refresh}", "Refreshes finished (Refresh, RefreshAfter), whatever their outcome.")
	refreshErrors := counter("rescache.refresh.errors", "{refresh}", "Refreshes that failed; the old value stayed.")
	leaseLeaks := counter("rescache.lease.leaks", "{lease}", "Leases held past LeakThreshold, or dropped without Release.")
	if err := in.err(); err != nil {
		return nil, fmt.Errorf("otelmetrics: creating the cache instruments: %w", err)
	}

	// The attribute sets are made once, so that a collection allocates
	// nothing of its own (Stats allocates its EvictionsByReason map).
	at := metric.WithAttributeSet(attribute.NewSet(CacheKey.String(name)))
	type reasonOpt struct {
		reason rescache.EvictReason
		opt    metric.ObserveOption
	}
	var reasons []reasonOpt
	for _, r := range rescache.EvictReasons() {
		reasons = append(reasons, reasonOpt{r, metric.WithAttributeSet(attribute.NewSet(
			CacheKey.String(name), EvictReasonKey.String(r.String())))})
	}
	count := func(o metric.Observer, i metric.Int64Observable, v uint64, opt metric.ObserveOption) {
		o.ObserveInt64(i, int64(v), opt)
	}

	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := c.Stats()
		count(o, hits, s.Hits, at)
		count(o, misses, s.Misses, at)
		count(o, errorHits, s.ErrorHits, at)
		count(o, builds, s.Builds, at)
		count(o, buildErrors, s.BuildErrors, at)
		count(o, buildPanics, s.BuildPanics, at)
		o.ObserveFloat64(buildTime, s.BuildTime.Seconds(), at)
		for _, r := range reasons {
			count(o, evictions, s.EvictionsByReason[r.reason], r.opt)
		}
		count(o, closes, s.Closes, at)
		count(o, closeErrors, s.CloseErrors, at)
		count(o, healthChecks, s.HealthChecks, at)
		count(o, healthCheckErrors, s.HealthCheckErrors, at)
		o.ObserveInt64(entries, int64(s.Entries), at)
		o.ObserveInt64(pending, int64(s.Pending), at)
		o.ObserveInt64(building, int64(s.Building), at)
		o.ObserveInt64(leased, int64(s.Leased), at)
		count(o, refreshes, s.Refreshes, at)
		count(o, refreshErrors, s.RefreshErrors, at)
		count(o, leaseLeaks, s.LeaseLeaks, at)
		return nil
	}, in.obs...)
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: registering the cache callback: %w", err)
	}
	return reg, nil
}

// instruments creates the observable instruments of one registration,
// collecting the errors and the instruments for RegisterCallback.
type instruments struct {
	meter metric.Meter
	errs  []error
	obs   []metric.Observable
}

func (in *instruments) counter(name, unit, desc string) metric.Int64ObservableCounter {
	i, err := in.meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	in.obs = append(in.obs, i)
	return i
}

func (in *instruments) gauge(name, unit, desc string) metric.Int64ObservableUpDownCounter {
	i, err := in.meter.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	in.obs = append(in.obs, i)
	return i
}

// seconds is a float counter of seconds.
func (in *instruments) seconds(name, desc string) metric.Float64ObservableCounter {
	i, err := in.meter.Float64ObservableCounter(name, metric.WithUnit("s"), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	in.obs = append(in.obs, i)
	return i
}

func (in *instruments) err() error { return errors.Join(in.errs...) }
