package rescache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/leanovate/gopter"
	"github.com/leanovate/gopter/gen"
	"github.com/leanovate/gopter/prop"

	"github.com/rescache/rescache/internal/percpu"
)

func TestPolicyOption(t *testing.T) {
	build := func(context.Context, string) (int, error) { return 1, nil }
	if _, err := New(build, &Options[string, int]{Policy: 2}); err == nil {
		t.Errorf("New with Policy 2 = nil error; want one")
	}
	for p, want := range map[Policy]string{LRU: "LRU", TinyLFU: "TinyLFU", 7: "Policy(7)"} {
		if got := p.String(); got != want {
			t.Errorf("Policy(%d).String() = %q; want %q", int(p), got, want)
		}
	}
	c := newTestCache(t, build, &Options[string, int]{Policy: TinyLFU})
	if _, lfu := c.policy.(*tinyLFU[string, int]); lfu || c.reads != nil {
		t.Errorf("TinyLFU without MaxEntries keeps a TinyLFU state; want the LRU order only")
	}
}

// scanCache fills a cache of 100 entries with 50 hot keys used 5 times
// each, then scans 1,000 new keys once each, and returns how many hot keys
// are still cached, and every key's builds.
func scanCache(t *testing.T, policy Policy) (hot int, b *builder) {
	b = new(builder)
	c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 100, Policy: policy})
	for range 5 {
		for i := range 50 {
			mustGet(t, c, "hot-"+strconv.Itoa(i))
		}
	}
	for i := range 1000 {
		k := "scan-" + strconv.Itoa(i)
		mustGet(t, c, k)
		// A new value is never rejected: it is cached until the next
		// insert at least.
		if _, ok := c.Peek(k); !ok {
			t.Fatalf("Peek(%q) right after its build = not found; want found", k)
		}
		if n := c.Len(); n > 100 {
			t.Fatalf("Len() = %d; MaxEntries is 100", n)
		}
	}
	for i := range 50 {
		if _, ok := c.Peek("hot-" + strconv.Itoa(i)); ok {
			hot++
		}
	}
	return hot, b
}

func TestTinyLFUKeepsHotKeysThroughAScan(t *testing.T) {
	lru, _ := scanCache(t, LRU)
	lfu, b := scanCache(t, TinyLFU)
	if lru != 0 {
		t.Errorf("LRU: %d hot keys survived the scan; want 0", lru)
	}
	if lfu < 45 {
		t.Errorf("TinyLFU: %d of 50 hot keys survived the scan; want at least 45", lfu)
	}
	for i := range 50 {
		if n := b.count("hot-" + strconv.Itoa(i)); n > 1 {
			t.Errorf("TinyLFU built hot-%d %d times before the scan's end; want 1", i, n)
		}
	}
}

// TestTinyLFUEvictsLeasedAndIdle: with TinyLFU a leased entry may be evicted
// for capacity (its value closes at release), an idle entry is swept, and a
// leased one past its idle deadline is parked, then swept after its release.
func TestTinyLFUEvictsLeasedAndIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var mu sync.Mutex
		reasons := map[string][]EvictReason{}
		c := newTestCache(t, b.build, &Options[string, *resource]{
			MaxEntries:  2,
			Policy:      TinyLFU,
			IdleTimeout: time.Second,
			OnEvict: func(key string, _ *resource, r EvictReason) {
				mu.Lock()
				reasons[key] = append(reasons[key], r)
				mu.Unlock()
			},
		})
		ctx := context.Background()
		l, err := c.Lease(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "b")
		mustGet(t, c, "c") // full: a or b leaves
		synctest.Wait()
		if n := c.Len(); n != 2 {
			t.Fatalf("Len() = %d; want 2", n)
		}
		mu.Lock()
		evicted := len(reasons)
		mu.Unlock()
		if evicted != 1 {
			t.Fatalf("evicted %v; want one entry, for capacity", reasons)
		}
		if _, ok := c.Peek("a"); !ok && l.Value().closed() {
			t.Errorf("leased value of a closed by its eviction; want it open until release")
		}
		time.Sleep(2 * time.Second) // a, if still cached, is leased: parked
		synctest.Wait()
		l.Release()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := c.Len(); n != 0 {
			t.Errorf("Len() after 4s idle = %d; want 0", n)
		}
		mu.Lock()
		defer mu.Unlock()
		for k, rs := range reasons {
			for _, r := range rs[:len(rs)-1] {
				t.Errorf("%s evicted twice: %v (then %v)", k, r, rs)
			}
			if r := rs[len(rs)-1]; r != EvictCapacity && r != EvictIdle {
				t.Errorf("%s evicted for %v; want capacity or idle", k, r)
			}
		}
		b.mu.Lock()
		all := slices.Clone(b.all)
		b.mu.Unlock()
		for _, r := range all {
			if n := r.closes.Load(); n != 1 {
				t.Errorf("value of %s closed %d times; want 1", r.key, n)
			}
		}
	})
}

func TestTinyLFUGetHitAllocatesNothing(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 10, Policy: TinyLFU, IdleTimeout: time.Minute})
	mustGet(t, c, "k")
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { c.Get(ctx, "k") }); n != 0 {
		t.Fatalf("Get of a found key allocates %v times; want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		l, _ := c.Lease(ctx, "k")
		l.Release()
	}); n != 0 {
		t.Fatalf("Lease and Release of a found key allocate %v times; want 0", n)
	}
}

// TestTinyLFUMemoryPerEntry measures the heap that TinyLFU adds to LRU at
// 100,000 entries: at most 16 bytes per entry.
func TestTinyLFUMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("fills two caches of 100,000 entries")
	}
	const n = 100_000
	heapOf := func(policy Policy) float64 {
		return heapPerEntry(t, n, Options[string, *resource]{MaxEntries: n, Policy: policy})
	}
	lru, lfu := heapOf(LRU), heapOf(TinyLFU)
	t.Logf("heap per entry at %d entries: LRU %.1f B, TinyLFU %.1f B (%+.1f B)", n, lru, lfu, lfu-lru)
	if lfu-lru > 16 {
		t.Errorf("TinyLFU takes %.1f bytes per entry more than LRU; want at most 16", lfu-lru)
	}
}

// TestPropertyTinyLFUInvariants runs random sequences of Get, Acquire,
// release, Invalidate and time passing against a TinyLFU cache (in fake
// time), and checks after every step what must hold whichever entry the
// policy evicts: Len never above MaxEntries and equal to the values built
// and not yet evicted; a found key is not built again; a value just built
// is cached; a value is closed once, never under a lease, and only after
// its eviction; an eviction for capacity happens only when a build adds an
// entry; after Shutdown every value was closed once.
func TestPropertyTinyLFUInvariants(t *testing.T) {
	params := gopter.DefaultTestParameters()
	params.MinSuccessfulTests = propertyRuns(t, 100)
	params.Rng.Seed(time.Now().UnixNano())
	props := gopter.NewProperties(params)
	props.Property("TinyLFU keeps the cache's invariants", prop.ForAll(
		func(seed uint64, keys, maxEntries int) string {
			var violation string
			synctest.Test(t, func(t *testing.T) { violation = runTinyLFUCase(seed, keys, maxEntries) })
			return violation
		},
		gen.UInt64(), gen.IntRange(1, 12), gen.IntRange(1, 6),
	))
	props.TestingRun(t)
}

type tval struct {
	key, gen int
	leases   int // leases the test holds
	evicted  bool
	closes   atomic.Int32
}

func runTinyLFUCase(seed uint64, keys, maxEntries int) (violation string) {
	var vmu sync.Mutex // protects violation
	fail := func(format string, args ...any) {
		vmu.Lock()
		defer vmu.Unlock()
		if violation == "" {
			violation = fmt.Sprintf(format, args...)
		}
	}
	failed := func() bool {
		vmu.Lock()
		defer vmu.Unlock()
		return violation != ""
	}
	var (
		mu        sync.Mutex // protects the fields below, written by hooks
		builds    = map[int]int{}
		live      = map[*tval]bool{}
		all       []*tval
		capacityN int
	)
	c, err := New(func(_ context.Context, key int) (*tval, error) {
		mu.Lock()
		defer mu.Unlock()
		builds[key]++
		v := &tval{key: key, gen: builds[key]}
		live[v] = true
		all = append(all, v)
		return v, nil
	}, &Options[int, *tval]{
		MaxEntries:      maxEntries,
		Policy:          TinyLFU,
		IdleTimeout:     modelIdle,
		MaxLifetime:     modelLifetime,
		ClockResolution: modelTick,
		OnEvict: func(key int, v *tval, r EvictReason) {
			mu.Lock()
			defer mu.Unlock()
			if v.evicted || !live[v] {
				fail("value %d#%d evicted twice", key, v.gen)
			}
			v.evicted = true
			delete(live, v)
			switch r {
			case EvictCapacity:
				capacityN++
			case EvictIdle, EvictLifetime, EvictInvalidated, EvictClosed:
			default:
				fail("value %d#%d evicted for %v", key, v.gen, r)
			}
		},
		Close: func(key int, v *tval) error {
			mu.Lock()
			defer mu.Unlock()
			if v.leases != 0 {
				fail("value %d#%d closed with %d leases out", key, v.gen, v.leases)
			}
			if !v.evicted {
				fail("value %d#%d closed before its OnEvict", key, v.gen)
			}
			if v.closes.Add(1) != 1 {
				fail("value %d#%d closed twice", key, v.gen)
			}
			return nil
		},
	})
	if err != nil {
		return err.Error()
	}
	r := rand.New(rand.NewPCG(seed, 15))
	var leases []Lease[int, *tval]
	ctx := context.Background()
	for step := 0; step < 200 && !failed(); step++ {
		key := r.IntN(keys)
		mu.Lock()
		cap0, builds0 := capacityN, builds[key]
		mu.Unlock()
		peeked, found := c.Peek(key)
		var got *tval
		switch op := r.IntN(20); {
		case op < 10:
			got, err = c.Get(ctx, key)
		case op < 14:
			var l Lease[int, *tval]
			l, err = c.Lease(ctx, key)
			if err == nil {
				got = l.Value()
				mu.Lock()
				got.leases++
				mu.Unlock()
				leases = append(leases, l)
			}
		case op < 17:
			if len(leases) > 0 {
				i := r.IntN(len(leases))
				mu.Lock()
				leases[i].Value().leases--
				mu.Unlock()
				leases[i].Release()
				leases = slices.Delete(leases, i, i+1)
			}
		case op < 18:
			c.Invalidate(key)
		default:
			time.Sleep(time.Duration(1+r.IntN(30)) * modelTick)
		}
		synctest.Wait() // hooks have run
		mu.Lock()
		built := builds[key] != builds0
		switch {
		case err != nil:
			fail("step %d: %v", step, err)
		case got != nil && (got.key != key || got.evicted):
			fail("step %d: Get(%d) = %d#%d (evicted %v)", step, key, got.key, got.gen, got.evicted)
		case found && got != nil && (built || got != peeked):
			fail("step %d: key %d was found (%d#%d) but Get built or returned %d#%d", step, key, peeked.key, peeked.gen, got.key, got.gen)
		case capacityN != cap0 && !built:
			fail("step %d: %d evictions for capacity without an insert", step, capacityN-cap0)
		case c.Len() > maxEntries:
			fail("step %d: Len() = %d; MaxEntries is %d", step, c.Len(), maxEntries)
		case c.Len() != len(live):
			fail("step %d: Len() = %d; %d values built and not evicted", step, c.Len(), len(live))
		}
		mu.Unlock()
		if built {
			if v, ok := c.Peek(key); !ok || v != got {
				fail("step %d: value %d#%d just built is not cached", step, key, got.gen)
			}
		}
	}
	for _, l := range leases {
		mu.Lock()
		l.Value().leases--
		mu.Unlock()
		l.Release()
	}
	if err := c.Shutdown(ctx); err != nil {
		fail("Shutdown: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range all {
		if n := v.closes.Load(); n != 1 {
			fail("value %d#%d closed %d times after Shutdown; want 1", v.key, v.gen, n)
		}
	}
	vmu.Lock()
	defer vmu.Unlock()
	return violation
}

// TestTinyLFURefresh: with TinyLFU a refreshed value replaces the old one
// (which is closed once), the cache stays within MaxEntries, and hot keys
// survive the refreshes.
func TestTinyLFURefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 4, Policy: TinyLFU})
		ctx := context.Background()
		for round := range 20 {
			for range 3 {
				mustGet(t, c, "hot")
			}
			mustGet(t, c, "cold-"+strconv.Itoa(round))
			if err := c.Refresh(ctx, "hot"); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			synctest.Wait()
			if n := c.Len(); n > 4 {
				t.Fatalf("Len() = %d; MaxEntries is 4", n)
			}
			if v := mustGet(t, c, "hot"); v.gen < round+2 {
				t.Fatalf("round %d: Get(hot) = build #%d; want #%d or later", round, v.gen, round+2)
			}
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if n := b.builds["hot"]; n != 21 {
			t.Errorf("hot built %d times; want 21 (once, then once per Refresh: never evicted)", n)
		}
		for _, r := range b.all {
			if r.key == "hot" && r.gen < b.builds["hot"] && r.closes.Load() != 1 {
				t.Errorf("replaced value hot#%d closed %d times; want 1", r.gen, r.closes.Load())
			}
		}
	})
}

// Once a TinyLFU cache has evicted, a long run of hits between two inserts
// reaches the sketch whole: a P whose ring of the read buffer wraps drains
// it, so at most a ring's worth per P waits for the next drain. (Before,
// the ring kept only the last 64 hits of a run.) In a bubble, so that no
// janitor tick drains meanwhile.
func TestTinyLFULongHitRunIsCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		c, err := New(func(_ context.Context, k int) (int, error) { return k, nil }, &Options[int, int]{MaxEntries: 8, Policy: TinyLFU})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for k := range 9 { // one eviction
			c.Get(ctx, k)
		}
		lfu := c.policy.(*tinyLFU[int, int])
		c.mu.Lock()
		lfu.drainLocked(c.clock())
		before := lfu.hits
		c.mu.Unlock()
		const run = 1000
		for range run {
			if _, err := c.Get(ctx, 8); err != nil {
				t.Fatal(err)
			}
		}
		c.mu.Lock()
		counted := lfu.hits - before
		c.mu.Unlock()
		if want := run - percpu.RingSize*runtime.GOMAXPROCS(0); counted < want {
			t.Errorf("%d of a run of %d hits reached the sketch; want at least %d", counted, run, want)
		}
	})
}
