package bench

import (
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// memoryConfig bounds every cache at exactly the entries it will hold, with
// an idle timeout that nothing reaches, so that each contender keeps the
// bookkeeping it would keep in production.
var memoryConfig = contender.Config{MaxEntries: fillEntries, IdleTimeout: 10 * time.Minute}

// memoryRows are the rows of the memory benchmark.
var memoryRows = []contender.Contender{
	contender.Rescache,
	contender.RescacheTinyLFU,
	contender.Otter,
	contender.Expirable,
	contender.TTLCache,
}

// BenchmarkMemory is benchmark 5: the heap that 100,000 entries keep alive,
// per entry (bytes/entry: runtime.MemStats.HeapAlloc after a full GC, minus
// the same before the cache was made; keys are pre-allocated and every entry
// holds the same value, so neither is counted). One op is one insert of a
// new key; a fresh cache is made every 100,000 ops, and bytes/entry is
// reported only once a run has filled one completely (so not with
// -benchtime 100x).
func BenchmarkMemory(b *testing.B) {
	for _, c := range memoryRows {
		b.Run(c.Name, func(b *testing.B) {
			res := fill(b, c, memoryConfig, true)
			if res.fills > 0 {
				b.ReportMetric(res.bytesPerEntry, "bytes/entry")
			}
		})
	}
}
