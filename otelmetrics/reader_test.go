package otelmetrics_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// newReader returns a meter provider read by a ManualReader, shut down at
// the end of the test.
func newReader(t testing.TB) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return mp, r
}

// point is one data point as the tests compare it: the metric's name and
// kind, its attributes as "k=v" sorted and joined by commas, and its value.
type point struct {
	name, kind, attrs string
	value             float64
}

func (p point) String() string {
	return fmt.Sprintf("%s %s{%s} %g", p.kind, p.name, p.attrs, p.value)
}

// collect reads every data point from r.
func collect(t testing.TB, r *sdkmetric.ManualReader) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{m.Name, sumKind(d.IsMonotonic), attrString(dp.Attributes), float64(dp.Value)})
				}
			case metricdata.Sum[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{m.Name, sumKind(d.IsMonotonic), attrString(dp.Attributes), dp.Value})
				}
			default:
				t.Fatalf("metric %s has data of type %T; want a sum", m.Name, m.Data)
			}
		}
	}
	sortPoints(out)
	return out
}

// sortPoints sorts ps by their String.
func sortPoints(ps []point) {
	slices.SortFunc(ps, func(a, b point) int { return strings.Compare(a.String(), b.String()) })
}

func sumKind(monotonic bool) string {
	if monotonic {
		return "counter"
	}
	return "updown"
}

func attrString(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

// value returns the value of the point of metric name with attrs, and
// whether there is one.
func value(ps []point, name, attrs string) (float64, bool) {
	for _, p := range ps {
		if p.name == name && p.attrs == attrs {
			return p.value, true
		}
	}
	return 0, false
}
