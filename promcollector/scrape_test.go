package promcollector_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
)

// serveMetrics serves reg on /metrics of a loopback port until the test
// ends and returns the URL.
func serveMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln) // returns http.ErrServerClosed at Close
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

// scrape GETs url, parses the text exposition, and returns every series
// labelled cache=cacheName, keyed by its name and its other labels, for
// example `rescache_evictions_total{reason="idle"}`. A histogram gives
// two keys, name_count and name_sum.
func scrape(t *testing.T, url, cacheName string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q; want the text format", url, ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	got := make(map[string]float64)
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key, ok := seriesKey(name, m, cacheName)
			if !ok {
				continue
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				got[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				got[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), +1) || b.GetCumulativeCount() != h.GetSampleCount() {
						t.Errorf("%s has bucket le=%v with %d; want only +Inf, with the count %d",
							name, b.GetUpperBound(), b.GetCumulativeCount(), h.GetSampleCount())
					}
				}
				got[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
				got[name+"_sum"] = m.GetHistogram().GetSampleSum()
			default:
				t.Errorf("%s has type %v; want counter, gauge or histogram", name, mf.GetType())
			}
		}
	}
	return got
}

// seriesKey names a series by its metric name and its labels other than
// cache; ok is false when its cache label is not cacheName.
func seriesKey(name string, m *dto.Metric, cacheName string) (key string, ok bool) {
	var labels []string
	for _, l := range m.GetLabel() {
		if l.GetName() == "cache" {
			ok = l.GetValue() == cacheName
			continue
		}
		labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	if len(labels) == 0 {
		return name, ok
	}
	sort.Strings(labels)
	return name + "{" + strings.Join(labels, ",") + "}", ok
}

// wantSeries returns the series of a cache whose every counter and gauge
// is zero, with one eviction series per reason; a test sets the values it
// expects to differ from zero.
func wantSeries() map[string]float64 {
	want := map[string]float64{
		"rescache_hits_total":                   0,
		"rescache_misses_total":                 0,
		"rescache_error_hits_total":             0,
		"rescache_builds_total":                 0,
		"rescache_build_errors_total":           0,
		"rescache_build_panics_total":           0,
		"rescache_closes_total":                 0,
		"rescache_close_errors_total":           0,
		"rescache_health_checks_total":          0,
		"rescache_health_check_errors_total":    0,
		"rescache_entries":                      0,
		"rescache_pending":                      0,
		"rescache_leased":                       0,
		"rescache_building":                     0,
		"rescache_refreshes_total":              0,
		"rescache_refresh_errors_total":         0,
		"rescache_lease_leaks_total":            0,
		"rescache_build_duration_seconds_count": 0,
	}
	for _, r := range rescache.EvictReasons() {
		want[fmt.Sprintf("rescache_evictions_total{reason=%q}", r)] = 0
	}
	return want
}

// checkSeries compares a scrape with want. The build time sum is checked
// apart: it must be at least minBuildSeconds and at most maxBuildSeconds.
func checkSeries(t *testing.T, step string, got, want map[string]float64, minBuildSeconds, maxBuildSeconds float64) {
	t.Helper()
	const sum = "rescache_build_duration_seconds_sum"
	if s, ok := got[sum]; !ok || s < minBuildSeconds || s > maxBuildSeconds {
		t.Errorf("%s: %s = %v (present %v); want within [%v, %v]", step, sum, s, ok, minBuildSeconds, maxBuildSeconds)
	}
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: %s missing from the scrape", step, k)
		case g != w:
			t.Errorf("%s: %s = %v; want %v", step, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok && k != sum {
			t.Errorf("%s: unexpected series %s = %v", step, k, g)
		}
	}
}

// res is a value of the test cache; closing it fails when failClose is set.
type res struct {
	key       string
	failClose bool
}

func (r *res) Close() error {
	if r.failClose {
		return errors.New("close " + r.key + ": connection reset")
	}
	return nil
}

// TestScrapeHTTP runs a known sequence of cache operations, scrapes a real
// /metrics endpoint after it, and checks every series.
func TestScrapeHTTP(t *testing.T) {
	const buildTime = 2 * time.Millisecond
	build := func(ctx context.Context, key string) (*res, error) {
		time.Sleep(buildTime) // every build takes at least this long
		switch key {
		case "bad":
			return nil, errors.New("tenant bad: no such database")
		case "boom":
			panic("tenant boom: corrupt config")
		}
		return &res{key: key, failClose: key == "leaky"}, nil
	}
	cache, err := rescache.New(build, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { cache.Close() })

	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New("tenants", cache))
	url := serveMetrics(t, reg)
	ctx := context.Background()
	start := time.Now()

	checkSeries(t, "new cache", scrape(t, url, "tenants"), wantSeries(), 0, 0)

	mustGet := func(key string) {
		t.Helper()
		if _, err := cache.Get(ctx, key); err != nil {
			t.Fatalf("Get(%q) = %v; want no error", key, err)
		}
	}
	mustGet("a")                               // miss, build 1
	mustGet("a")                               // hit
	mustGet("a")                               // hit
	_, release, err := cache.Acquire(ctx, "b") // miss, build 2, one lease
	if err != nil {
		t.Fatalf("Acquire(%q) = %v; want no error", "b", err)
	}
	if _, err := cache.Get(ctx, "bad"); err == nil { // miss, build 3 fails
		t.Fatalf("Get(%q) succeeded; want an error", "bad")
	}
	var pe *rescache.PanicError
	if _, err := cache.Get(ctx, "boom"); !errors.As(err, &pe) { // miss, build 4 panics
		t.Fatalf("Get(%q) = %v; want a *rescache.PanicError", "boom", err)
	}
	mustGet("leaky") // miss, build 5
	mustGet("b")     // hit
	for _, k := range []string{"a", "leaky"} {
		if !cache.Invalidate(k) { // evicted, closed; leaky's close fails
			t.Fatalf("Invalidate(%q) = false; want true", k)
		}
	}

	want := wantSeries()
	want["rescache_hits_total"] = 3
	want["rescache_misses_total"] = 5
	want["rescache_builds_total"] = 5
	want["rescache_build_duration_seconds_count"] = 5
	want["rescache_build_errors_total"] = 2
	want["rescache_build_panics_total"] = 1
	want[`rescache_evictions_total{reason="invalidated"}`] = 2
	want["rescache_closes_total"] = 2
	want["rescache_close_errors_total"] = 1
	want["rescache_entries"] = 1
	want["rescache_leased"] = 1
	minBuild := (5 * buildTime).Seconds()
	checkSeries(t, "after the sequence", scrape(t, url, "tenants"), want, minBuild, time.Since(start).Seconds())

	release()
	if err := cache.Close(); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	want[`rescache_evictions_total{reason="closed"}`] = 1
	want["rescache_closes_total"] = 3
	want["rescache_entries"] = 0
	want["rescache_leased"] = 0
	checkSeries(t, "after Close", scrape(t, url, "tenants"), want, minBuild, time.Since(start).Seconds())
}

// TestScrapeLintLiveCache lints the exposition of a cache that has done
// some work, through the registry that serves it.
func TestScrapeLintLiveCache(t *testing.T) {
	cache, err := rescache.New(func(ctx context.Context, key int) (int, error) { return key * 2, nil }, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { cache.Close() })
	for i := range 3 {
		cache.Get(context.Background(), i%2)
	}
	c := promcollector.New("numbers", cache)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatalf("CollectAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
