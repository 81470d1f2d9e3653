package otelmetrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/otelmetrics"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// fixedStats is a Statser that returns s.
type fixedStats struct{ s rescache.Stats }

func (f *fixedStats) Stats() rescache.Stats { return f.s }

func TestRegisterCacheReportsEveryField(t *testing.T) {
	mp, r := newReader(t)
	src := &fixedStats{rescache.Stats{
		Hits: 10, Misses: 4, ErrorHits: 2, Builds: 5, BuildErrors: 3, BuildPanics: 1,
		BuildTime:         1500 * time.Millisecond,
		EvictionsByReason: map[rescache.EvictReason]uint64{rescache.EvictCapacity: 6, rescache.EvictIdle: 1},
		Closes:            7, CloseErrors: 1, HealthChecks: 9, HealthCheckErrors: 2,
		Entries: 3, Pending: 1, Leased: 2,
	}}
	if _, err := otelmetrics.RegisterCache(mp.Meter("test"), "tenants", src); err != nil {
		t.Fatalf("RegisterCache: %v", err)
	}
	got := collect(t, r)
	const c = "rescache.cache=tenants"
	for _, want := range []point{
		{"rescache.hits", "counter", c, 10},
		{"rescache.misses", "counter", c, 4},
		{"rescache.error_hits", "counter", c, 2},
		{"rescache.builds", "counter", c, 5},
		{"rescache.build.errors", "counter", c, 3},
		{"rescache.build.panics", "counter", c, 1},
		{"rescache.build.time", "counter", c, 1.5},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=capacity", 6},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=idle", 1},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=lifetime", 0},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=invalidated", 0},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=closed", 0},
		{"rescache.evictions", "counter", c + ",rescache.evict.reason=unhealthy", 0},
		{"rescache.closes", "counter", c, 7},
		{"rescache.close.errors", "counter", c, 1},
		{"rescache.health_checks", "counter", c, 9},
		{"rescache.health_check.errors", "counter", c, 2},
		{"rescache.entries", "updown", c, 3},
		{"rescache.pending", "updown", c, 1},
		{"rescache.leased", "updown", c, 2},
	} {
		if !containsPoint(got, want) {
			t.Errorf("collection lacks %v; got:\n%s", want, pointsString(got))
		}
	}
	// Every field of Stats, and one point per eviction reason.
	if want := 18 + len(rescache.EvictReasons()); len(got) != want {
		t.Errorf("collection has %d points; want %d:\n%s", len(got), want, pointsString(got))
	}

	// A second collection reads the Stats again.
	src.s.Hits = 11
	if v, _ := value(collect(t, r), "rescache.hits", c); v != 11 {
		t.Errorf("rescache.hits after Hits = 11: %v; want 11", v)
	}
}

func containsPoint(ps []point, want point) bool {
	for _, p := range ps {
		if p == want {
			return true
		}
	}
	return false
}

func pointsString(ps []point) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\t" + p.String() + "\n")
	}
	return b.String()
}

func TestRegisterCacheUnregister(t *testing.T) {
	mp, r := newReader(t)
	reg, err := otelmetrics.RegisterCache(mp.Meter("test"), "tenants", &fixedStats{})
	if err != nil {
		t.Fatalf("RegisterCache: %v", err)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	if got := collect(t, r); len(got) != 0 {
		t.Errorf("collection after Unregister:\n%s; want nothing", pointsString(got))
	}
}

func TestRegisterCacheNil(t *testing.T) {
	mp, _ := newReader(t)
	_, err := otelmetrics.RegisterCache(mp.Meter("test"), "tenants", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "otelmetrics: ") {
		t.Errorf("RegisterCache(nil) = %v; want an otelmetrics error", err)
	}
}

// TestRegisterCacheRealCache reads a real cache: a hit, two misses, a
// failed build and a lease.
func TestRegisterCacheRealCache(t *testing.T) {
	errDown := errors.New("tenant down")
	c, err := rescache.New(func(_ context.Context, key string) (string, error) {
		if key == "bad" {
			return "", errDown
		}
		return "db-" + key, nil
	}, &rescache.Options[string, string]{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	mp, r := newReader(t)
	if _, err := otelmetrics.RegisterCache(mp.Meter("test"), "tenants", c); err != nil {
		t.Fatalf("RegisterCache: %v", err)
	}
	ctx := context.Background()
	c.Get(ctx, "acme")
	c.Get(ctx, "acme")
	c.Get(ctx, "bad")
	_, release, err := c.Acquire(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	got := collect(t, r)
	const a = "rescache.cache=tenants"
	for name, want := range map[string]float64{
		"rescache.hits": 2, "rescache.misses": 2, "rescache.builds": 2,
		"rescache.build.errors": 1, "rescache.entries": 1, "rescache.leased": 1, "rescache.pending": 0,
	} {
		if v, ok := value(got, name, a); !ok || v != want {
			t.Errorf("%s = %v (found %v); want %v", name, v, ok, want)
		}
	}
}

// BenchmarkCollect measures one collection through a ManualReader of a
// cache registered with RegisterCache: the allocations are the SDK's and
// the Stats snapshot's map; the callback builds no attribute set.
func BenchmarkCollect(b *testing.B) {
	mp, r := newReader(b)
	src := &fixedStats{rescache.Stats{Hits: 1, EvictionsByReason: map[rescache.EvictReason]uint64{}}}
	if _, err := otelmetrics.RegisterCache(mp.Meter("bench"), "tenants", src); err != nil {
		b.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Collect(ctx, &rm); err != nil {
			b.Fatal(err)
		}
	}
}
