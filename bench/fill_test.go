package bench

import (
	"context"
	"runtime"
	"testing"

	"github.com/rescache/rescache/bench/internal/contender"
)

// fillEntries is the size of one fill: the number of distinct keys put in
// one fresh cache before it is measured and replaced.
const fillEntries = 100_000

// fillResult is what fill measured.
type fillResult struct {
	builds int64
	// bytesPerEntry is the mean heap growth per entry over the complete
	// fills (0 when the run was too short to complete one).
	bytesPerEntry float64
	fills         int // complete fills measured
}

// fill times b.N Gets of distinct keys, each a miss whose build returns
// sharedValue at once. The keys are pre-allocated; every fillEntries Gets
// the cache is replaced by a fresh one (clock stopped). When measure is
// set, the live heap is read after a full GC before each fill and after it,
// so that bytesPerEntry is the heap that fillEntries entries keep alive,
// keys and value excluded.
func fill(b *testing.B, c contender.Contender, cfg contender.Config, measure bool) fillResult {
	keys := tenantKeys(fillEntries)
	build, builds := countingBuild()
	ctx := context.Background()

	var (
		res    fillResult
		cache  contender.Cache
		before uint64
		grown  uint64
	)
	start := func() {
		if measure {
			before = heapInUse()
		}
		cache = c.New(build, cfg)
	}
	finish := func(complete bool) {
		if measure && complete {
			grown += heapInUse() - before
			res.fills++
		}
		runtime.KeepAlive(cache)
		cache.Close()
	}

	b.ReportAllocs()
	b.StopTimer()
	start()
	b.ResetTimer()
	b.StartTimer()
	for i := range b.N {
		k := i % fillEntries
		if k == 0 && i > 0 {
			b.StopTimer()
			finish(true)
			start()
			b.StartTimer()
		}
		if v, _, err := cache.Get(ctx, keys[k]); err != nil || v == nil {
			b.Fatalf("Get(%q) = %v, %v; want a value", keys[k], v, err)
		}
	}
	b.StopTimer()
	finish(b.N%fillEntries == 0)
	res.builds = builds.Load()
	if res.fills > 0 {
		res.bytesPerEntry = float64(grown) / float64(res.fills*fillEntries)
	}
	return res
}
