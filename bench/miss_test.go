package bench

import (
	"testing"

	"github.com/rescache/rescache/bench/internal/contender"
)

// missRows are the rows of the miss-path benchmark.
var missRows = []contender.Contender{
	contender.Rescache,
	contender.Singleflight,
}

// BenchmarkMissPath is benchmark 6: Gets of distinct keys, each a miss whose
// build returns at once (the same value every time, so only the cache's own
// work and allocations are counted), on an unbounded cache. A fresh cache
// is made, with the clock stopped, every 100,000 ops. builds/op must be 1.
func BenchmarkMissPath(b *testing.B) {
	for _, c := range missRows {
		b.Run(c.Name, func(b *testing.B) {
			res := fill(b, c, contender.Config{}, false)
			b.ReportMetric(float64(res.builds)/float64(b.N), "builds/op")
		})
	}
}
