package rescache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs a mixed workload against one cache for RESCACHE_SOAK (a
// duration: 60s, 10m), checking every value against a model as it goes, and
// fails if the live heap or the number of goroutines grew by more than 10%
// between the end of the warm-up and the end of the run:
//
//	RESCACHE_SOAK=60s go test -run Soak -count=1 -v .
//
// The warm-up is the first tenth of the run, at least 5 seconds and at most
// a minute. By then every key of the workload has been asked for many
// times, the cache is full (MaxEntries), the ErrorTTL memory is full, every
// kind of eviction and fault has happened thousands of times, and the
// runtime's pools and maps have grown to their working size: what the
// process holds from then on is its steady state, and anything that grows
// with the number of operations shows as growth.
//
// Both measurements are taken the same way: the callers are paused between
// calls (no lease out, nothing pending), the cache's own goroutines are left
// to finish what they were doing (builds past their deadline, health
// checks), then runtime.GC runs twice (the second clears sync.Pool's
// victim cache) and the live heap and runtime.NumGoroutine are read.
func TestSoak(t *testing.T) {
	env := os.Getenv("RESCACHE_SOAK")
	if env == "" {
		t.Skip("set RESCACHE_SOAK to a duration (RESCACHE_SOAK=60s) to run the soak test")
	}
	d, err := time.ParseDuration(env)
	if err != nil || d <= 0 {
		t.Fatalf("RESCACHE_SOAK=%q: want a positive duration such as 60s or 10m", env)
	}
	warmup := min(max(d/10, 5*time.Second), time.Minute)
	if warmup >= d {
		t.Fatalf("RESCACHE_SOAK=%v: want more than the %v warm-up", d, warmup)
	}
	s := newSoak(t)
	s.run(d, warmup)
}

const (
	soakKeys       = 3000 // known tenants, asked for with a Zipf distribution
	soakWorkers    = 32
	soakMaxEntries = 1200
	soakPayload    = 4 << 10 // bytes per value, so that values weigh in the heap
	soakThink      = 200 * time.Microsecond
	soakDrift      = 3 * time.Second
)

type soakValue struct {
	key     string
	leases  atomic.Int32
	closes  atomic.Int32
	payload []byte
}

// soak is the workload, its model and its measurements.
type soak struct {
	t *testing.T
	c *Cache[string, *soakValue]

	// The model: every value built and not yet closed, and counters kept
	// by the build function, the Closer, the health check and OnEvict.
	mu                        sync.Mutex // protects live
	live                      map[*soakValue]bool
	succeeded, failed, panics atomic.Uint64
	closes, closeFails        atomic.Uint64
	evictions, healthChecks   atomic.Uint64
	ops, unknownKeys          atomic.Uint64
	problems                  atomic.Uint64 // model violations; the first few are reported

	pause sync.RWMutex // callers hold it for reading during each call
	start time.Time    // set before the callers start; read-only after
}

var errSoakUnknown = errors.New("soak: unknown tenant")

func newSoak(t *testing.T) *soak {
	s := &soak{t: t, live: map[*soakValue]bool{}, start: time.Now()}
	c, err := New(s.build, &Options[string, *soakValue]{
		MaxEntries:          soakMaxEntries,
		IdleTimeout:         time.Second,
		MaxLifetime:         5 * time.Second,
		BuildTimeout:        100 * time.Millisecond,
		MaxConcurrentBuilds: 8,
		ErrorTTL:            500 * time.Millisecond,
		Close:               s.close,
		OnEvict:             func(string, *soakValue, EvictReason) { s.evictions.Add(1) },
		HealthCheck:         s.healthCheck,
		HealthCheckInterval: 300 * time.Millisecond,
		HealthCheckTimeout:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	return s
}

func (s *soak) problem(format string, args ...any) {
	if s.problems.Add(1) <= 10 {
		s.t.Errorf(format, args...)
	}
}

func (s *soak) build(ctx context.Context, key string) (*soakValue, error) {
	if key[0] == 'u' {
		s.failed.Add(1)
		return nil, errSoakUnknown
	}
	switch n := rand.IntN(1000); {
	case n < 30:
		s.failed.Add(1)
		return nil, errors.New("soak: build failed")
	case n < 35:
		s.panics.Add(1)
		panic("soak: build panicked")
	case n < 40:
		<-ctx.Done() // past BuildTimeout
		s.failed.Add(1)
		return nil, ctx.Err()
	case n < 200:
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	}
	v := &soakValue{key: key, payload: make([]byte, soakPayload)}
	s.mu.Lock()
	s.live[v] = true
	s.mu.Unlock()
	s.succeeded.Add(1)
	return v, nil
}

func (s *soak) close(key string, v *soakValue) error {
	if n := v.leases.Load(); n != 0 {
		s.problem("value of %s closed while %d leases hold it", key, n)
	}
	if n := v.closes.Add(1); n != 1 {
		s.problem("value of %s closed %d times", key, n)
	}
	s.mu.Lock()
	delete(s.live, v)
	s.mu.Unlock()
	s.closes.Add(1)
	if rand.IntN(100) == 0 {
		s.closeFails.Add(1)
		return errors.New("soak: close failed")
	}
	return nil
}

func (s *soak) healthCheck(ctx context.Context, key string, v *soakValue) error {
	s.healthChecks.Add(1)
	if v.closes.Load() != 0 {
		s.problem("health check of a closed value of %s", key)
	}
	if rand.IntN(20) == 0 {
		return errors.New("soak: unhealthy")
	}
	return nil
}

// worker runs calls until stop is closed, with a short pause between calls
// (a server's callers do other work too).
func (s *soak) worker(seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 0))
	zipf := rand.NewZipf(rng, 1.3, 1, soakKeys-1)
	for {
		select {
		case <-stop:
			return
		default:
		}
		s.pause.RLock()
		s.call(rng, zipf)
		s.pause.RUnlock()
		s.ops.Add(1)
		time.Sleep(soakThink)
	}
}

// soakKey returns a known key drawn from the Zipf distribution, whose
// popular keys drift every soakDrift: the tenants that were hot go idle
// (and are health-checked, then evicted as idle) while others warm up.
func (s *soak) soakKey(zipf *rand.Zipf) string {
	shift := uint64(time.Since(s.start)/soakDrift) * soakKeys / 16
	return fmt.Sprintf("t%d", (zipf.Uint64()+shift)%soakKeys)
}

func (s *soak) call(rng *rand.Rand, zipf *rand.Zipf) {
	c := s.c
	key := s.soakKey(zipf)
	if rng.IntN(20) == 0 {
		// An unknown tenant, never asked for before.
		key = fmt.Sprintf("u%d", s.unknownKeys.Add(1))
	}
	ctx := context.Background()
	if rng.IntN(4) == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Microsecond)
		defer cancel()
	}
	switch op := rng.IntN(100); {
	case op < 50:
		v, err := c.Get(ctx, key)
		s.checkCall(ctx, key, v, err)
	case op < 85:
		v, release, err := c.Acquire(ctx, key)
		s.checkCall(ctx, key, v, err)
		if err != nil {
			return
		}
		v.leases.Add(1)
		if v.closes.Load() != 0 {
			s.problem("Acquire(%s) returned a closed value", key)
		}
		if rng.IntN(10) == 0 {
			time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond) // a use of the value
		}
		v.payload[rng.IntN(soakPayload)]++
		v.leases.Add(-1)
		release()
	case op < 86:
		c.Invalidate(fmt.Sprintf("t%d", rng.IntN(soakKeys)))
	default:
		if v, ok := c.Peek(key); ok && v.key != key {
			s.problem("Peek(%s) = value of %s", key, v.key)
		}
	}
}

func (s *soak) checkCall(ctx context.Context, key string, v *soakValue, err error) {
	var pe *PanicError
	switch {
	case err == nil:
		if v == nil || v.key != key {
			s.problem("Get(%s) = %v", key, v)
		}
	case key[0] == 'u' && errors.Is(err, errSoakUnknown):
	case ctx.Err() != nil && err == ctx.Err():
	case errors.As(err, &pe), errors.Is(err, context.DeadlineExceeded):
	case err.Error() == "soak: build failed":
	default:
		s.problem("Get(%s) = %v", key, err)
	}
}

// soakSample is one measurement.
type soakSample struct {
	heap       uint64 // live heap after runtime.GC, bytes
	goroutines int
	len        int
}

// measure pauses the callers and takes a soakSample.
func (s *soak) measure() soakSample {
	s.pause.Lock()
	defer s.pause.Unlock()
	// Let the cache's goroutines finish what they were doing: builds past
	// their deadline and health checks. What is left in flight is the
	// janitor and one count per live value.
	for deadline := time.Now().Add(10 * time.Second); s.c.inflight.Load() != 1+s.c.ctr.liveValues.Load(); {
		if time.Now().After(deadline) {
			s.t.Errorf("the cache did not settle: inflight %d, live values %d", s.c.inflight.Load(), s.c.ctr.liveValues.Load())
			break
		}
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSample{heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine(), len: s.c.Len()}
}

func (s *soak) run(d, warmup time.Duration) {
	t, c := s.t, s.c
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(uint64(w), stop)
		}()
	}

	// The sampler reads the runtime's heap and goroutine figures (without
	// stopping the world) every 100ms for the peaks.
	var peakHeap, peakG uint64
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/sched/goroutines:goroutines"}}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			metrics.Read(ms)
			peakHeap = max(peakHeap, ms[0].Value.Uint64())
			peakG = max(peakG, ms[1].Value.Uint64())
		}
	}()

	start := time.Now()
	time.Sleep(warmup) // the run's schedule, not a synchronisation
	warm := s.measure()
	opsWarm := s.ops.Load()
	t.Logf("after the %v warm-up: %d operations, live heap %.1f MiB, %d goroutines, Len %d", warmup, opsWarm, mib(warm.heap), warm.goroutines, warm.len)
	time.Sleep(d - time.Since(start))
	end := s.measure()
	elapsed := time.Since(start)

	close(stop)
	wg.Wait()
	<-samplerDone
	st := c.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil && errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	final := c.Stats()

	ops := s.ops.Load()
	t.Logf("soak of %v: %d operations (%.0f/s) by %d callers over %d known keys and %d unknown ones",
		elapsed.Round(time.Second), ops, float64(ops)/elapsed.Seconds(), soakWorkers, soakKeys, s.unknownKeys.Load())
	t.Logf("builds %d (%d failed, %d panicked), hits %d, misses %d, error hits %d, evictions %d %v, closes %d (%d failed), health checks %d (%d failed)",
		final.Builds, final.BuildErrors-final.BuildPanics, final.BuildPanics, st.Hits, st.Misses, st.ErrorHits,
		final.Evictions, final.EvictionsByReason, final.Closes, final.CloseErrors, final.HealthChecks, final.HealthCheckErrors)
	t.Logf("peak heap in use %.1f MiB, peak goroutines %d", mib(peakHeap), peakG)
	t.Logf("live heap after GC: %.2f MiB after warm-up, %.2f MiB at the end (%+.1f%%); goroutines %d and %d (%+.1f%%); Len %d and %d",
		mib(warm.heap), mib(end.heap), growth(warm.heap, end.heap), warm.goroutines, end.goroutines,
		growth(uint64(warm.goroutines), uint64(end.goroutines)), warm.len, end.len)

	if end.heap > warm.heap+warm.heap/10 {
		t.Errorf("live heap grew from %d to %d bytes (%+.1f%%); want at most +10%%", warm.heap, end.heap, growth(warm.heap, end.heap))
	}
	if end.goroutines > warm.goroutines+warm.goroutines/10 {
		t.Errorf("goroutines grew from %d to %d; want at most +10%%", warm.goroutines, end.goroutines)
	}

	// The model after Shutdown.
	succeeded, failed, panics := s.succeeded.Load(), s.failed.Load(), s.panics.Load()
	if final.Builds != succeeded+failed+panics || final.BuildErrors != failed+panics || final.BuildPanics != panics {
		t.Errorf("Stats: Builds %d, BuildErrors %d, BuildPanics %d; build counted %d successes, %d failures, %d panics",
			final.Builds, final.BuildErrors, final.BuildPanics, succeeded, failed, panics)
	}
	if final.Closes != succeeded || s.closes.Load() != succeeded || final.CloseErrors != s.closeFails.Load() {
		t.Errorf("after Shutdown: Stats.Closes %d (Closer called %d times) for %d values built; CloseErrors %d, %d injected",
			final.Closes, s.closes.Load(), succeeded, final.CloseErrors, s.closeFails.Load())
	}
	if final.Evictions != s.evictions.Load() || final.HealthChecks != s.healthChecks.Load() {
		t.Errorf("Stats: Evictions %d, HealthChecks %d; OnEvict called %d times, HealthCheck %d",
			final.Evictions, final.HealthChecks, s.evictions.Load(), s.healthChecks.Load())
	}
	if final.Pending != 0 || final.Entries != 0 || final.Leased != 0 {
		t.Errorf("after Shutdown: Pending %d, Entries %d, Leased %d; want 0", final.Pending, final.Entries, final.Leased)
	}
	s.mu.Lock()
	if n := len(s.live); n != 0 {
		t.Errorf("after Shutdown: %d values never closed", n)
	}
	s.mu.Unlock()
	if n := s.problems.Load(); n > 0 {
		t.Errorf("%d model violations in all", n)
	}
}

func growth(from, to uint64) float64 {
	if from == 0 {
		return 0
	}
	return (float64(to) - float64(from)) / float64(from) * 100
}
