package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/rescache/rescache/bench/internal/contender"
)

// The hit-ratio benchmark: the six rows of issue 15. 10,000 keys, a bound of
// 500, one goroutine, a build that returns at once; 100,000 requests to
// warm the cache, then 1,000,000 measured. Zipf with s = 0.8, 1.0 and 1.2,
// and the same with every 5th request the next key of a sequential scan
// over keys never seen before.
const (
	hitKeys     = 10_000
	hitCapacity = 500
	hitWarm     = 100_000
	hitMeasured = 1_000_000
	hitScanStep = 5 // every hitScanStep-th request is a scan key, in the scan rows
)

// hitSeeds are the streams of a run: op i of a benchmark replays stream
// hitSeeds[i%len], so -benchtime 5x runs each seed once, and the spread
// between seeds is reported beside the mean.
var hitSeeds = []uint64{1, 2, 3, 4, 5}

// hitRatioRows are the contenders of the hit-ratio benchmark.
var hitRatioRows = []contender.Contender{
	contender.Rescache,
	contender.RescacheTinyLFU,
	contender.Otter,
}

// zipfSampler draws ranks 0..n-1 with probability proportional to
// (1+rank)^-s, for any s >= 0 (math/rand's Zipf needs s > 1), by inverse
// CDF: a binary search of a uniform draw in the cumulative weights.
type zipfSampler struct {
	cdf []float64 // cdf[i] = weights of ranks 0..i, cdf[n-1] = 1
}

func newZipfSampler(n int, s float64) *zipfSampler {
	cdf := make([]float64, n)
	sum := 0.0
	for i := range cdf {
		sum += math.Pow(float64(i+1), -s)
		cdf[i] = sum
	}
	for i := range cdf {
		cdf[i] /= sum
	}
	return &zipfSampler{cdf: cdf}
}

// rank returns a rank drawn with r.
func (z *zipfSampler) rank(r *rand.Rand) int {
	i := sort.SearchFloat64s(z.cdf, r.Float64())
	return min(i, len(z.cdf)-1)
}

// hitStream returns the requests of one run, warm-up first: Zipf(s) over
// keys, and, with scan, every hitScanStep-th request replaced by the next
// of "scan-0", "scan-1", ...
func hitStream(keys []string, s float64, scan bool, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, math.Float64bits(s)))
	z := newZipfSampler(len(keys), s)
	out := make([]string, hitWarm+hitMeasured)
	next := 0
	for i := range out {
		if scan && i%hitScanStep == hitScanStep-1 {
			out[i] = "scan-" + strconv.Itoa(next)
			next++
			continue
		}
		out[i] = keys[z.rank(r)]
	}
	return out
}

// hitRatio replays stream through a fresh cache of c and returns the share
// of the measured requests that did not build.
func hitRatio(tb testing.TB, c contender.Contender, stream []string) float64 {
	built := &contender.Builder{}
	cache := c.New(built.Build, contender.Config{MaxEntries: hitCapacity})
	defer cache.Close()
	ctx := context.Background()
	var builds0 int64
	for i, k := range stream {
		if i == hitWarm {
			builds0 = built.Counts.Builds.Load()
		}
		v, release, err := cache.Get(ctx, k)
		if err != nil || v == nil || v.Key != k {
			tb.Fatalf("Get(%q) = %v, %v", k, v, err)
		}
		release()
	}
	return 1 - float64(built.Counts.Builds.Load()-builds0)/float64(len(stream)-hitWarm)
}

// BenchmarkHitRatio reports, for each row and contender, the hit ratio of
// the measured requests: hit/op is the mean over the ops, min-hit/op and
// max-hit/op the spread between seeds. One op is one whole run (1,100,000
// requests on a fresh cache) of the stream of seed hitSeeds[op%5]: run it
// with -benchtime 5x to see each seed once.
//
//	go test -run '^$' -bench HitRatio -benchtime 5x ./bench/
func BenchmarkHitRatio(b *testing.B) {
	keys := tenantKeys(hitKeys)
	for _, scan := range []bool{false, true} {
		for _, s := range []float64{0.8, 1.0, 1.2} {
			name := fmt.Sprintf("zipf=%.1f", s)
			if scan {
				name += "+scan"
			}
			streams := map[uint64][]string{}
			for _, c := range hitRatioRows {
				b.Run(name+"/"+c.Name, func(b *testing.B) {
					var ratios []float64
					for i := 0; b.Loop(); i++ {
						seed := hitSeeds[i%len(hitSeeds)]
						b.StopTimer()
						st, ok := streams[seed]
						if !ok {
							st = hitStream(keys, s, scan, seed)
							streams[seed] = st
						}
						b.StartTimer()
						ratios = append(ratios, hitRatio(b, c, st))
					}
					sum := 0.0
					for _, r := range ratios {
						sum += r
					}
					b.ReportMetric(sum/float64(len(ratios)), "hit/op")
					b.ReportMetric(slices.Min(ratios), "min-hit/op")
					b.ReportMetric(slices.Max(ratios), "max-hit/op")
				})
			}
		}
	}
}

// TestZipfSampler checks the sampler against its weights for s <= 1.
func TestZipfSampler(t *testing.T) {
	for _, s := range []float64{0.8, 1.0} {
		const n, draws = 100, 200_000
		z := newZipfSampler(n, s)
		r := rand.New(rand.NewPCG(1, 2))
		counts := make([]int, n)
		for range draws {
			counts[z.rank(r)]++
		}
		// The share of rank 0 is 1/H(n, s); rank 9's is 10^-s of it.
		h := 0.0
		for i := range n {
			h += math.Pow(float64(i+1), -s)
		}
		for _, rank := range []int{0, 9} {
			want := math.Pow(float64(rank+1), -s) / h
			got := float64(counts[rank]) / draws
			if math.Abs(got-want) > 0.1*want {
				t.Errorf("s=%v: share of rank %d = %.4f; want %.4f within 10%%", s, rank, got, want)
			}
		}
	}
}
