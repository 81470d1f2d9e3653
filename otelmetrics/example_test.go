package otelmetrics_test

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/otelmetrics"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// RegisterCache reports a cache's Stats at each collection. A ManualReader
// stands in for the exporter here; with an OTLP or Prometheus exporter the
// calls are the same.
func ExampleRegisterCache() {
	cache, _ := rescache.New(func(_ context.Context, tenant string) (string, error) {
		return "connection to " + tenant, nil
	}, &rescache.Options[string, string]{})
	defer cache.Close()

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())

	reg, err := otelmetrics.RegisterCache(provider.Meter("example"), "tenants", cache)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Unregister()

	ctx := context.Background()
	cache.Get(ctx, "acme")
	cache.Get(ctx, "acme")
	cache.Get(ctx, "globex")

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch m.Name {
		case "rescache.hits", "rescache.misses", "rescache.builds", "rescache.entries":
			s := m.Data.(metricdata.Sum[int64])
			fmt.Printf("%s %d %s\n", m.Name, s.DataPoints[0].Value, m.Unit)
		}
	}
	// Output:
	// rescache.hits 1 {call}
	// rescache.misses 2 {call}
	// rescache.builds 2 {build}
	// rescache.entries 2 {entry}
}

// RegisterSQLPools reports the pools of a cache of *sql.DB. With
// sqladapter the function is
// func() map[string]sql.DBStats { return sqladapter.PoolStats(cache) };
// here it returns the figures of two pools.
func ExampleRegisterSQLPools() {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())

	poolStats := func() map[string]sql.DBStats {
		return map[string]sql.DBStats{
			"acme":   {MaxOpenConnections: 10, InUse: 3, Idle: 2},
			"globex": {MaxOpenConnections: 10, InUse: 1, Idle: 0},
		}
	}
	// Without Tenant: true, every metric is one sum over the pools.
	reg, err := otelmetrics.RegisterSQLPools(provider.Meter("example"), "tenants", poolStats, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Unregister()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name != "db.client.connection.count" && m.Name != "db.client.connection.max" {
			continue
		}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			state, _ := dp.Attributes.Value("db.client.connection.state")
			fmt.Printf("%s %s %d\n", m.Name, state.String(), dp.Value)
		}
	}
	// Unordered output:
	// db.client.connection.count used 4
	// db.client.connection.count idle 2
	// db.client.connection.max  20
}
