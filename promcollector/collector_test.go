package promcollector_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
)

// fixedStats is a Statser that returns the same Stats every time and
// counts its calls.
type fixedStats struct {
	s     rescache.Stats
	calls int
}

func (f *fixedStats) Stats() rescache.Stats {
	f.calls++
	return f.s
}

// sampleStats has a distinct value in every field, so that a metric read
// from the wrong field shows.
func sampleStats() rescache.Stats {
	return rescache.Stats{
		Hits:        101,
		Misses:      23,
		ErrorHits:   4,
		Builds:      20,
		BuildErrors: 5,
		BuildPanics: 1,
		BuildTime:   2500 * time.Millisecond,
		Evictions:   12,
		EvictionsByReason: map[rescache.EvictReason]uint64{
			rescache.EvictCapacity:    6,
			rescache.EvictIdle:        3,
			rescache.EvictInvalidated: 2,
			rescache.EvictUnhealthy:   1,
		},
		Closes:            11,
		CloseErrors:       2,
		HealthChecks:      40,
		HealthCheckErrors: 1,
		Entries:           7,
		Pending:           2,
		Leased:            3,
	}
}

func TestCollectorExposition(t *testing.T) {
	src := &fixedStats{s: sampleStats()}
	c := promcollector.New("tenants", src)

	const want = `
# HELP rescache_build_duration_seconds Time spent in finished builds; _sum / _count is the mean build latency. Only the +Inf bucket: the cache keeps a count and a total.
# TYPE rescache_build_duration_seconds histogram
rescache_build_duration_seconds_bucket{cache="tenants",le="+Inf"} 20
rescache_build_duration_seconds_sum{cache="tenants"} 2.5
rescache_build_duration_seconds_count{cache="tenants"} 20
# HELP rescache_build_errors_total Builds that failed: returned an error, panicked or ran out of time.
# TYPE rescache_build_errors_total counter
rescache_build_errors_total{cache="tenants"} 5
# HELP rescache_build_panics_total Builds that panicked (also counted in rescache_build_errors_total).
# TYPE rescache_build_panics_total counter
rescache_build_panics_total{cache="tenants"} 1
# HELP rescache_building Build functions running.
# TYPE rescache_building gauge
rescache_building{cache="tenants"} 0
# HELP rescache_builds_total Calls of the build function.
# TYPE rescache_builds_total counter
rescache_builds_total{cache="tenants"} 20
# HELP rescache_close_errors_total Calls of the Closer hook that returned an error or panicked.
# TYPE rescache_close_errors_total counter
rescache_close_errors_total{cache="tenants"} 2
# HELP rescache_closes_total Values closed: calls of the Closer hook, failed or not.
# TYPE rescache_closes_total counter
rescache_closes_total{cache="tenants"} 11
# HELP rescache_entries Found entries in the cache.
# TYPE rescache_entries gauge
rescache_entries{cache="tenants"} 7
# HELP rescache_error_hits_total Calls answered with a remembered build error (ErrorTTL).
# TYPE rescache_error_hits_total counter
rescache_error_hits_total{cache="tenants"} 4
# HELP rescache_evictions_total Found entries that left the cache, by reason.
# TYPE rescache_evictions_total counter
rescache_evictions_total{cache="tenants",reason="capacity"} 6
rescache_evictions_total{cache="tenants",reason="closed"} 0
rescache_evictions_total{cache="tenants",reason="discarded"} 0
rescache_evictions_total{cache="tenants",reason="idle"} 3
rescache_evictions_total{cache="tenants",reason="invalidated"} 2
rescache_evictions_total{cache="tenants",reason="lifetime"} 0
rescache_evictions_total{cache="tenants",reason="replaced"} 0
rescache_evictions_total{cache="tenants",reason="unhealthy"} 1
# HELP rescache_health_check_errors_total Health checks that failed; each one evicts its entry (reason="unhealthy").
# TYPE rescache_health_check_errors_total counter
rescache_health_check_errors_total{cache="tenants"} 1
# HELP rescache_health_checks_total Health checks run on idle entries.
# TYPE rescache_health_checks_total counter
rescache_health_checks_total{cache="tenants"} 40
# HELP rescache_hits_total Calls of Get, Lease and Acquire served by a found entry.
# TYPE rescache_hits_total counter
rescache_hits_total{cache="tenants"} 101
# HELP rescache_lease_leaks_total Leases held past LeakThreshold, or dropped without Release.
# TYPE rescache_lease_leaks_total counter
rescache_lease_leaks_total{cache="tenants"} 0
# HELP rescache_leased Leases (Lease, Acquire) not yet released.
# TYPE rescache_leased gauge
rescache_leased{cache="tenants"} 3
# HELP rescache_misses_total Calls of Get, Lease and Acquire that waited for a build, started or joined.
# TYPE rescache_misses_total counter
rescache_misses_total{cache="tenants"} 23
# HELP rescache_pending Builds started whose build function has not returned (waiting for a slot or running).
# TYPE rescache_pending gauge
rescache_pending{cache="tenants"} 2
# HELP rescache_refresh_errors_total Refreshes that failed; the old value stayed.
# TYPE rescache_refresh_errors_total counter
rescache_refresh_errors_total{cache="tenants"} 0
# HELP rescache_refreshes_total Refreshes finished (Refresh, RefreshAfter), whatever their outcome.
# TYPE rescache_refreshes_total counter
rescache_refreshes_total{cache="tenants"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if src.calls != 1 {
		t.Errorf("one collection called Stats %d times; want 1", src.calls)
	}
}

// TestCollectorEveryReason checks that every eviction reason the core
// knows has its own series, so a reason added to rescache shows up here
// without a change to this package.
func TestCollectorEveryReason(t *testing.T) {
	c := promcollector.New("tenants", &fixedStats{s: sampleStats()})
	got := testutil.CollectAndCount(c, "rescache_evictions_total")
	if want := len(rescache.EvictReasons()); got != want {
		t.Errorf("rescache_evictions_total has %d series; want %d, one per rescache.EvictReasons()", got, want)
	}
}

func TestCollectorLint(t *testing.T) {
	c := promcollector.New("tenants", &fixedStats{s: sampleStats()})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatalf("CollectAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestCollectorTwoCaches checks that two caches in one registry, told
// apart by their names, register and gather without conflict, and that a
// second collector with the same name is refused.
func TestCollectorTwoCaches(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(promcollector.New("sql", &fixedStats{s: sampleStats()})); err != nil {
		t.Fatalf("Register(sql): %v", err)
	}
	if err := reg.Register(promcollector.New("redis", &fixedStats{})); err != nil {
		t.Fatalf("Register(redis): %v", err)
	}
	if err := reg.Register(promcollector.New("sql", &fixedStats{})); err == nil {
		t.Errorf("Register of a second collector named sql succeeded; want an error")
	}
	n, err := testutil.GatherAndCount(reg, "rescache_hits_total")
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if n != 2 {
		t.Errorf("rescache_hits_total has %d series; want 2", n)
	}
}

// BenchmarkCollect measures one collection of the cache collector, the
// metrics drained from the channel: its allocations are the Stats snapshot's
// map and the const metrics themselves.
func BenchmarkCollect(b *testing.B) {
	c := promcollector.New("tenants", &fixedStats{s: sampleStats()})
	ch := make(chan prometheus.Metric, 64)
	b.ReportAllocs()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
}
