package bench

import (
	"runtime"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// Churn: many more tenants than the bound, so that values are evicted (and
// closed) all the time, some of them while another request is using them.
const (
	churnTenants    = 10_000
	churnMaxEntries = 500
	churnBuild      = 100 * time.Microsecond
	churnUse        = 50 * time.Microsecond
	churnStreamN    = 1 << 16
	churnWorkers    = 64 // goroutines serving requests, whatever GOMAXPROCS
)

// churnRows are the rows of the churn benchmark: every bounded contender.
// rescache appears twice per policy (LRU, TinyLFU): through Acquire
// (leases), and through Get, whose values an eviction may close while in
// use.
var churnRows = []contender.Contender{
	contender.RescacheAcquire,
	contender.Rescache,
	contender.RescacheTinyLFUAcquire,
	contender.RescacheTinyLFU,
	contender.Otter,
	contender.LRU,
	contender.Expirable,
	contender.TTLCache,
	contender.LazyCache,
}

// BenchmarkChurn is benchmark 4: 10,000 tenants in a Zipf stream, at most
// 500 cached, a build of 100 µs, and each request using its value for 50 µs
// before releasing it, served by 64 goroutines. Every peer closes a value in
// its eviction hook; rescache closes it with its Closer once unleased.
// Reported: ops/s, builds/op (the miss ratio), used-after-close/op (the
// share of requests whose value was closed while in use), closes/op.
func BenchmarkChurn(b *testing.B) {
	keys := tenantKeys(churnTenants)
	stream := zipfStream(keys, churnStreamN)
	for _, c := range churnRows {
		b.Run(c.Name, func(b *testing.B) { benchChurn(b, c, stream) })
	}
}

func benchChurn(b *testing.B, c contender.Contender, stream []string) {
	built := &contender.Builder{Delay: func(string) time.Duration { return churnBuild }}
	cache := c.New(built.Build, contender.Config{MaxEntries: churnMaxEntries})
	defer cache.Close()
	// Warm: fill the cache past its bound.
	useStream(cache, stream, churnWorkers, churnUse, countdown(4*churnMaxEntries))
	builds0, closes0 := built.Counts.Builds.Load(), built.Counts.Closes.Load()

	b.SetParallelism(max(1, churnWorkers/runtime.GOMAXPROCS(0)))
	u := new(usage)
	var w walker
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		useLoop(cache, stream, w.start(len(stream)), churnUse, u, pb.Next)
	})
	b.StopTimer()

	n := float64(b.N)
	if e := u.errors.Load(); e > 0 {
		b.Errorf("%d requests got an error or a wrong value", e)
	}
	uac := u.usedAfterClose.Load()
	if c.Leases && uac > 0 {
		b.Errorf("%d requests used a value after it was closed, with a lease held", uac)
	}
	if d := built.Counts.DoubleCloses.Load(); d > 0 {
		b.Logf("%d values were closed twice", d)
	}
	b.ReportMetric(n/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(built.Counts.Builds.Load()-builds0)/n, "builds/op")
	b.ReportMetric(float64(uac)/n, "used-after-close/op")
	b.ReportMetric(float64(built.Counts.Closes.Load()-closes0)/n, "closes/op")
}
