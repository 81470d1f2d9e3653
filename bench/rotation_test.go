package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rescache/rescache"
)

// TestRotationFigures measures rotation under load: 100 tenants, each
// leased over and over by 64 callers (uniform over the tenants, each lease
// held 1 ms), whose values are replaced every 1.6 s (every tenant at least
// five times in 10 s), by expiry (MaxLifetime) or by a background refresh
// (RefreshAfter), with and without LifetimeJitter of 0.8 s. A build sleeps
// 20 to 100 ms, standing for a connect. Every tenant is built at once
// before the clock starts (a deployment), so that without jitter their
// lifetimes end together.
//
// For each configuration it reports the callers that waited for a build
// (Stats.Misses after the warm-up; also the leases that took at least the
// fastest build, 20 ms), the latency of Lease (p50, p99, max),
// the largest number of builds started within any 100 ms, and the
// rotations per tenant (fewest and mean).
//
// It runs for 10 s per configuration when RESCACHE_ROTATION_FIGURES is set
// (the figures of the READMEs):
//
//	RESCACHE_ROTATION_FIGURES=1 go test -run RotationFigures -count=1 -v ./bench/
//
// and otherwise for 1.5 s each, with lifetimes scaled down, checking only
// that with refreshes a tenth as many callers wait as with expiry, at most.
func TestRotationFigures(t *testing.T) {
	full := os.Getenv("RESCACHE_ROTATION_FIGURES") != ""
	p := rotationParams{tenants: 100, callers: 64, use: time.Millisecond, buildMin: 20 * time.Millisecond, buildMax: 100 * time.Millisecond,
		run: 10 * time.Second, age: 1600 * time.Millisecond, jitter: 800 * time.Millisecond}
	if !full {
		p.run, p.age, p.jitter = 1500*time.Millisecond, 240*time.Millisecond, 120*time.Millisecond
	}
	configs := []struct {
		name    string
		refresh bool
		jitter  bool
	}{
		{"MaxLifetime", false, false},
		{"MaxLifetime + LifetimeJitter", false, true},
		{"RefreshAfter", true, false},
		{"RefreshAfter + LifetimeJitter", true, true},
	}
	var rows []rotationResult
	for _, cfg := range configs {
		opts := rescache.Options[string, *rotationValue]{}
		if cfg.refresh {
			opts.RefreshAfter = p.age
		} else {
			opts.MaxLifetime = p.age
		}
		if cfg.jitter {
			opts.LifetimeJitter = p.jitter
		}
		r := runRotation(t, p, cfg.name, &opts)
		rows = append(rows, r)
		if r.errors != 0 {
			t.Errorf("%s: %d leases failed", cfg.name, r.errors)
		}
		if full && r.minRotations < 5 {
			t.Errorf("%s: a tenant was rotated %d times; want at least 5", cfg.name, r.minRotations)
		}
	}
	if expiry, refresh := rows[0].waited, rows[2].waited; expiry == 0 || refresh > expiry/10 {
		t.Errorf("callers that waited for a build: %d with MaxLifetime, %d with RefreshAfter; want some, and at most a tenth as many", expiry, refresh)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d tenants, %d callers, lease held %v, build %v-%v, %v per configuration, age %v, jitter %v\n\n",
		p.tenants, p.callers, p.use, p.buildMin, p.buildMax, p.run, p.age, p.jitter)
	b.WriteString("| configuration | leases | callers that waited for a build (Stats.Misses) | leases ≥ 20 ms | Lease p50 | Lease p99 | Lease max | most builds started in 100 ms | rotations per tenant (min / mean) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %v | %v | %v | %d | %d / %.1f |\n",
			r.name, r.leases, r.waited, r.slow, fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.max), r.burst, r.minRotations, r.meanRotations)
	}
	t.Logf("rotation figures:\n%s", b.String())
}

type rotationParams struct {
	tenants, callers   int
	use                time.Duration // how long a caller holds its lease
	buildMin, buildMax time.Duration
	run                time.Duration
	age, jitter        time.Duration // MaxLifetime or RefreshAfter; LifetimeJitter when used
}

type rotationResult struct {
	name                 string
	leases, errors       int64
	waited               uint64 // Stats.Misses after the warm-up
	slow                 int    // leases that took at least buildMin
	p50, p99, max        time.Duration
	burst                int // most builds started within any 100 ms
	minRotations         int
	meanRotations        float64
	refreshes, evictions uint64
}

type rotationValue struct{ key string }

func runRotation(t *testing.T, p rotationParams, name string, opts *rescache.Options[string, *rotationValue]) rotationResult {
	keys := tenantKeys(p.tenants)
	var (
		mu     sync.Mutex
		starts []time.Time
		per    = make(map[string]int)
	)
	var seq atomic.Uint64
	build := func(ctx context.Context, key string) (*rotationValue, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		per[key]++
		mu.Unlock()
		r := rand.New(rand.NewPCG(zipfSeed, seq.Add(1)))
		d := p.buildMin + time.Duration(r.Int64N(int64(p.buildMax-p.buildMin)))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &rotationValue{key: key}, nil
	}
	c, err := rescache.New(build, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Warm-up: every tenant at once.
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			if _, err := c.Get(ctx, k); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	warmBuilds := len(starts)
	mu.Unlock()
	s0 := c.Stats()

	var leases, errs atomic.Int64
	lat := make([][]time.Duration, p.callers)
	deadline := time.Now().Add(p.run)
	for i := range p.callers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(zipfSeed, uint64(i)))
			for time.Now().Before(deadline) {
				k := keys[r.IntN(len(keys))]
				began := time.Now()
				l, err := c.Lease(ctx, k)
				d := time.Since(began)
				if err != nil || l.Value() == nil || l.Value().key != k {
					errs.Add(1)
					continue
				}
				lat[i] = append(lat[i], d)
				time.Sleep(p.use)
				l.Release()
				leases.Add(1)
			}
		})
	}
	wg.Wait()
	s := c.Stats()

	all := slices.Concat(lat...)
	slices.Sort(all)
	slow := len(all) - sort.Search(len(all), func(i int) bool { return all[i] >= p.buildMin })
	q := func(f float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(f*float64(len(all))))]
	}
	mu.Lock()
	rotStarts := slices.Clone(starts[warmBuilds:])
	minRot, total := -1, 0
	for _, k := range keys {
		n := per[k] - 1
		total += n
		if minRot < 0 || n < minRot {
			minRot = n
		}
	}
	mu.Unlock()
	slices.SortFunc(rotStarts, func(a, b time.Time) int { return a.Compare(b) })
	burst := 0
	for i, j := 0, 0; j < len(rotStarts); j++ {
		for rotStarts[j].Sub(rotStarts[i]) >= 100*time.Millisecond {
			i++
		}
		burst = max(burst, j-i+1)
	}
	res := rotationResult{
		name: name, leases: leases.Load(), errors: errs.Load(),
		waited: s.Misses - s0.Misses, slow: slow,
		p50: q(0.50), p99: q(0.99), max: all[len(all)-1],
		burst: burst, minRotations: minRot, meanRotations: float64(total) / float64(len(keys)),
		refreshes: s.Refreshes, evictions: s.Evictions,
	}
	t.Logf("%s: %+v; Stats: Refreshes %d, RefreshErrors %d, Evictions %v", name, res, s.Refreshes, s.RefreshErrors, s.EvictionsByReason)
	return res
}

// fmtDur rounds d for the table to three significant digits or so.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return d.Round(100 * time.Nanosecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}
