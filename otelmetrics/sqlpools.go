package otelmetrics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"
)

// CloseReasonKey is the reason of rescache.sql.connection.closed:
// "max_idle", "max_idle_time" or "max_lifetime", the [sql.DBStats] counter
// it comes from.
const CloseReasonKey = attribute.Key("rescache.sql.close.reason")

// SQLPoolOptions configures [RegisterSQLPools]. The zero value, like a nil
// pointer, reports every metric once per collection, summed over the open
// pools, without a tenant attribute. RegisterSQLPools copies the options and
// never modifies them.
type SQLPoolOptions[K comparable] struct {
	// Tenant adds the attribute rescache.tenant to every point: one point
	// per open tenant pool instead of one sum. Each tenant is then a time
	// series of its own in every backend, for each metric, and a backend
	// keeps a series long after its tenant is evicted; turn it on only when
	// tenants are few.
	//
	// default: false, one sum over the open pools.
	Tenant bool

	// TenantValue formats a key as the value of rescache.tenant, for
	// example to redact or shorten it. Keys that format to the same value
	// are reported as one pool, their figures summed. Not called unless
	// Tenant is set.
	//
	// default: nil, meaning fmt.Sprint(key).
	TenantValue func(K) string
}

// RegisterSQLPools creates on meter the connection pool instruments and
// registers a callback that reports, at each collection, the [sql.DBStats]
// that pools returns: the pools of a cache of *sql.DB values, keyed by
// tenant (with sqladapter, a function that returns
// sqladapter.PoolStats(cache)). Every point has the attribute
// db.client.connection.pool.name=name, and rescache.tenant when
// opts.Tenant is set. opts may be nil.
//
// The metrics, from the semantic conventions for database clients:
//
//   - db.client.connection.count {connection}, with
//     db.client.connection.state "used" (DBStats.InUse) and "idle"
//     (DBStats.Idle).
//   - db.client.connection.max {connection}: DBStats.MaxOpenConnections.
//     Not reported for a pool without a limit, nor, without a tenant
//     attribute, when any open pool has none.
//
// and from DBStats counters that the conventions do not name:
//
//   - rescache.sql.connection.waits {request}: DBStats.WaitCount,
//     connections waited for.
//   - rescache.sql.connection.wait_duration (s): DBStats.WaitDuration,
//     time blocked waiting for a connection.
//   - rescache.sql.connection.closed {connection}: DBStats.MaxIdleClosed,
//     MaxIdleTimeClosed and MaxLifetimeClosed, with
//     rescache.sql.close.reason "max_idle", "max_idle_time" and
//     "max_lifetime".
//
// A pool's counters start at zero when it is opened. With a tenant
// attribute, a tenant whose pool is evicted has no points until it is
// opened again, and its counters then restart from zero, which a backend
// reads as a counter reset. Without one, the callback keeps the counters
// of each open pool from the previous collection and, when the pool is gone
// (or its counters went down: the tenant's pool was replaced), adds them to
// a total of closed pools that it reports with the open ones, so the sums
// never decrease. What a pool counted between its last collection and its
// close is lost: the sums may undercount, never overcount.
//
// Collections of one registration are serialized. An error is returned when
// pools is nil or meter cannot create an instrument or register the
// callback.
func RegisterSQLPools[K comparable](meter metric.Meter, name string, pools func() map[K]sql.DBStats, opts *SQLPoolOptions[K]) (metric.Registration, error) {
	if pools == nil {
		return nil, errors.New("otelmetrics: RegisterSQLPools with a nil pools function")
	}
	var o SQLPoolOptions[K]
	if opts != nil {
		o = *opts
	}
	if o.TenantValue == nil {
		o.TenantValue = func(k K) string { return fmt.Sprint(k) }
	}

	count, err1 := dbconv.NewClientConnectionCountObservable(meter)
	maxConns, err2 := dbconv.NewClientConnectionMaxObservable(meter)
	waits, err3 := meter.Int64ObservableCounter("rescache.sql.connection.waits", metric.WithUnit("{request}"),
		metric.WithDescription("Connections waited for: the pool was at its limit of open connections (DBStats.WaitCount)."))
	waitDuration, err4 := meter.Float64ObservableCounter("rescache.sql.connection.wait_duration", metric.WithUnit("s"),
		metric.WithDescription("Time blocked waiting for a connection (DBStats.WaitDuration)."))
	closed, err5 := meter.Int64ObservableCounter("rescache.sql.connection.closed", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections closed by the pool's limits (DBStats.MaxIdleClosed, MaxIdleTimeClosed, MaxLifetimeClosed)."))
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("otelmetrics: creating the pool instruments: %w", err)
	}
	p := &poolReporter[K]{
		name:  name,
		pools: pools,
		opts:  o,
		count: count.Inst(), max: maxConns.Inst(),
		waits: waits, waitDuration: waitDuration, closed: closed,
		last:     make(map[K]poolCounters),
		attrs:    make(map[string]*poolAttrs),
		byTenant: make(map[string]poolSample),
	}
	p.sumAttrs = p.newAttrs(nil)
	reg, err := meter.RegisterCallback(p.observe, p.count, p.max, p.waits, p.waitDuration, p.closed)
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: registering the pool callback: %w", err)
	}
	return reg, nil
}

// poolReporter is the callback of one RegisterSQLPools. All fields but mu,
// last, retired and attrs are set before the callback is registered and
// only read afterwards.
type poolReporter[K comparable] struct {
	name  string
	pools func() map[K]sql.DBStats
	opts  SQLPoolOptions[K]

	count, max    metric.Int64ObservableUpDownCounter
	waits, closed metric.Int64ObservableCounter
	waitDuration  metric.Float64ObservableCounter
	sumAttrs      *poolAttrs // the attributes of the sum (no tenant)

	mu sync.Mutex // protects the fields below; held through a collection
	// last holds the counters of each pool open at the previous
	// collection; used without a tenant attribute.
	last map[K]poolCounters
	// retired sums the last counters of pools closed or replaced since
	// registration; zero at first.
	retired poolCounters
	// attrs holds the observe options of each tenant value seen at the
	// previous collection; used with a tenant attribute.
	attrs map[string]*poolAttrs
	// byTenant is a collection's sum per tenant value, cleared and reused
	// so that a collection allocates no map; used with a tenant attribute.
	byTenant map[string]poolSample
}

// poolAttrs are the observe options of one series (one tenant, or the
// sum), made once so that a collection does not rebuild attribute sets.
type poolAttrs struct {
	pool, used, idle                  metric.ObserveOption
	maxIdle, maxIdleTime, maxLifetime metric.ObserveOption
}

// newAttrs returns the options for tenant, or for the sum when tenant is
// nil.
func (p *poolReporter[K]) newAttrs(tenant *string) *poolAttrs {
	base := []attribute.KeyValue{attribute.String("db.client.connection.pool.name", p.name)}
	if tenant != nil {
		base = append(base, TenantKey.String(*tenant))
	}
	with := func(kv ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), kv...)...))
	}
	var c dbconv.ClientConnectionCountObservable
	return &poolAttrs{
		pool:        with(),
		used:        with(c.AttrClientConnectionState(dbconv.ClientConnectionStateUsed)),
		idle:        with(c.AttrClientConnectionState(dbconv.ClientConnectionStateIdle)),
		maxIdle:     with(CloseReasonKey.String("max_idle")),
		maxIdleTime: with(CloseReasonKey.String("max_idle_time")),
		maxLifetime: with(CloseReasonKey.String("max_lifetime")),
	}
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

func (c *poolCounters) add(d poolCounters) {
	c.waitCount += d.waitCount
	c.waitDuration += d.waitDuration
	c.maxIdleClosed += d.maxIdleClosed
	c.maxIdleTimeClosed += d.maxIdleTimeClosed
	c.maxLifetimeClosed += d.maxLifetimeClosed
}

// below reports whether any counter of c is lower than in d: c cannot be a
// later reading of the same pool as d.
func (c poolCounters) below(d poolCounters) bool {
	return c.waitCount < d.waitCount || c.waitDuration < d.waitDuration ||
		c.maxIdleClosed < d.maxIdleClosed || c.maxIdleTimeClosed < d.maxIdleTimeClosed ||
		c.maxLifetimeClosed < d.maxLifetimeClosed
}

// poolSample is what one series reports: one pool, or a sum of pools.
type poolSample struct {
	used, idle int
	max        int  // sum of MaxOpenConnections
	unlimited  bool // some pool in the sum has no limit
	poolCounters
}

func (s *poolSample) addStats(st sql.DBStats) {
	s.used += st.InUse
	s.idle += st.Idle
	s.max += st.MaxOpenConnections
	s.unlimited = s.unlimited || st.MaxOpenConnections <= 0
	s.add(countersOf(st))
}

// observe is the registered callback.
func (p *poolReporter[K]) observe(_ context.Context, o metric.Observer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.pools()
	if !p.opts.Tenant {
		p.report(o, p.sumLocked(now), p.sumAttrs)
		return nil
	}
	clear(p.byTenant)
	for k, st := range now {
		t := p.opts.TenantValue(k)
		s := p.byTenant[t]
		s.addStats(st)
		p.byTenant[t] = s
	}
	for t, s := range p.byTenant {
		a := p.attrs[t]
		if a == nil {
			a = p.newAttrs(&t)
			p.attrs[t] = a
		}
		p.report(o, s, a)
	}
	for t := range p.attrs { // forget tenants that are gone
		if _, ok := p.byTenant[t]; !ok {
			delete(p.attrs, t)
		}
	}
	return nil
}

// sumLocked returns the sample of all pools: the gauges of the open pools,
// and their counters plus those of the pools closed since registration.
func (p *poolReporter[K]) sumLocked(now map[K]sql.DBStats) poolSample {
	for k, prev := range p.last {
		st, ok := now[k]
		if !ok || countersOf(st).below(prev) {
			p.retired.add(prev)
		}
		if !ok {
			delete(p.last, k)
		}
	}
	s := poolSample{poolCounters: p.retired}
	for k, st := range now {
		p.last[k] = countersOf(st)
		s.addStats(st)
	}
	return s
}

// report observes one sample with the options of its series.
func (p *poolReporter[K]) report(o metric.Observer, s poolSample, a *poolAttrs) {
	o.ObserveInt64(p.count, int64(s.used), a.used)
	o.ObserveInt64(p.count, int64(s.idle), a.idle)
	if !s.unlimited {
		o.ObserveInt64(p.max, int64(s.max), a.pool)
	}
	o.ObserveInt64(p.waits, s.waitCount, a.pool)
	o.ObserveFloat64(p.waitDuration, s.waitDuration.Seconds(), a.pool)
	o.ObserveInt64(p.closed, s.maxIdleClosed, a.maxIdle)
	o.ObserveInt64(p.closed, s.maxIdleTimeClosed, a.maxIdleTime)
	o.ObserveInt64(p.closed, s.maxLifetimeClosed, a.maxLifetime)
}
