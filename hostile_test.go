package rescache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Keys often come from request paths, so an attacker can ask for any number
// of distinct keys. TestHostileKeys sends distinct random keys, most of them
// unknown tenants whose build fails and the others tenants whose build
// succeeds, through a cache configured as a server facing such traffic
// should be:
//
//	MaxEntries 1,000, MaxConcurrentBuilds 16, ErrorTTL 1s
//	(MaxErrorEntries left at its default, MaxEntries)
//
// and checks, while it runs, that what the cache holds stays bounded by
// those options: found entries, concurrent builds, remembered errors (the
// map of entries), goroutines and the live heap.
//
// The number of keys is 1,000,000, or 200,000 in a -race build (the race
// detector makes each call about ten times slower); RESCACHE_HOSTILE_KEYS
// sets it.

const (
	hostileMaxEntries = 1000
	hostileMaxBuilds  = 16
	hostileErrorTTL   = time.Second
	hostileWorkers    = 64 // concurrent callers

	// hostileGoroutines bounds the goroutines the cache may add: per
	// caller at most a build goroutine and the AfterFunc goroutines of
	// its context, plus the janitor.
	hostileGoroutines = 3*hostileWorkers + 8

	// hostileHeap bounds the live heap the run may add, in bytes. The cache
	// holds 1,000 found entries (with 256-byte values) and 1,000 remembered
	// errors, plus one pending entry per caller; the live heap measured
	// peaks at 2-3 MiB (the run logs it). The bound leaves room for the
	// garbage collector's timing, and is far below what an unbounded map
	// of 1,000,000 entries would hold.
	hostileHeap = 8 << 20
)

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// hostileValue is a tenant's resource, with some payload as a real one has.
type hostileValue struct {
	key     string
	payload [256]byte //lint:ignore U1000 sizes the value like a real resource
	closed  atomic.Bool
}

var errUnknownTenant = errors.New("unknown tenant")

// hostileKey returns the i-th key: distinct for distinct i, random-looking,
// as a request path would carry it.
func hostileKey(i uint64) string {
	// The finaliser of splitmix64: a bijection on uint64, so keys never
	// repeat.
	z := i
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return "/t/" + strconv.FormatUint(z, 36)
}

// knownTenant reports whether key names a tenant whose build succeeds: one
// key in four.
func knownTenant(key string) bool {
	z, err := strconv.ParseUint(key[len("/t/"):], 36, 64)
	return err == nil && z%4 == 0
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestHostileKeys(t *testing.T) {
	keys := uint64(1_000_000)
	if raceEnabled() {
		keys = 200_000
	}
	keys = envInt(t, "RESCACHE_HOSTILE_KEYS", keys)

	var inBuild, peakBuilds, builds, failed, closes atomic.Int64
	c, err := New(func(ctx context.Context, key string) (*hostileValue, error) {
		n := inBuild.Add(1)
		defer inBuild.Add(-1)
		for p := peakBuilds.Load(); n > p && !peakBuilds.CompareAndSwap(p, n); p = peakBuilds.Load() {
		}
		builds.Add(1)
		if !knownTenant(key) {
			failed.Add(1)
			return nil, fmt.Errorf("tenant %s: %w", key, errUnknownTenant)
		}
		return &hostileValue{key: key}, nil
	}, &Options[string, *hostileValue]{
		MaxEntries:          hostileMaxEntries,
		MaxConcurrentBuilds: hostileMaxBuilds,
		ErrorTTL:            hostileErrorTTL,
		Close: func(_ string, v *hostileValue) error {
			if v.closed.Swap(true) {
				t.Errorf("value of %s closed twice", v.key)
			}
			closes.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Found entries, remembered errors and one pending entry per caller.
	// Size sums striped counters without a lock, so while callers run it
	// may count an insert and miss a delete made during the sum: the live
	// samples get one more entry per caller of slack. The exact check is
	// made with the callers paused, when nothing is pending.
	maxMapPaused := hostileMaxEntries + c.opts.MaxErrorEntries
	maxMap := maxMapPaused + 2*hostileWorkers

	runtime.GC()
	baseHeap := liveHeap()
	baseG := runtime.NumGoroutine()

	// The sampler looks at the cache every millisecond while the callers
	// run; its ticker paces the samples, it synchronises nothing.
	var (
		peakLen, peakMap, peakG int
		peakHeap                uint64
		samples, pauses         int
		peakPaused              [3]int // pending, found, failed
	)
	// Callers hold pause for reading during each call; the sampler takes
	// it for writing every 20th sample to look at the cache between calls.
	var pause sync.RWMutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			samples++
			if n := c.Len(); n > peakLen {
				peakLen = n
			}
			if n := c.m.Size(); n > peakMap {
				peakMap = n
			}
			if n := runtime.NumGoroutine(); n > peakG {
				peakG = n
			}
			if samples%50 == 0 {
				if h := liveHeap(); h > peakHeap {
					peakHeap = h
				}
			}
			if samples%20 == 0 {
				pause.Lock()
				pauses++
				var counts [3]int
				c.m.Range(func(_ string, e *entry[string, *hostileValue]) bool {
					switch w := e.word.Load(); {
					case w&failedBit != 0:
						counts[2]++
					case w&valuedBit != 0:
						counts[1]++
					default:
						counts[0]++
					}
					return true
				})
				pause.Unlock()
				for i, n := range counts {
					peakPaused[i] = max(peakPaused[i], n)
				}
			}
		}
	}()

	start := time.Now()
	var next atomic.Uint64
	var wg sync.WaitGroup
	var unexpected atomic.Int64
	for w := range hostileWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= keys {
					return
				}
				key := hostileKey(i)
				// Half the callers carry a request deadline, so their
				// builds run in goroutines of their own; the others wait
				// in the build.
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if w%2 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Minute)
				}
				pause.RLock()
				v, err := c.Get(ctx, key)
				pause.RUnlock()
				cancel()
				isKnown := knownTenant(key)
				switch {
				case isKnown && err == nil && v.key == key:
				case !isKnown && errors.Is(err, errUnknownTenant):
				default:
					if unexpected.Add(1) <= 10 {
						t.Errorf("Get(%s) = %v, %v (known tenant: %v)", key, v, err, isKnown)
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled

	runtime.GC()
	endHeap := liveHeap()
	s := c.Stats()
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	t.Logf("%d distinct keys (%d builds, %d failed) in %v by %d callers: %.0f calls/s", keys, builds.Load(), failed.Load(), took.Round(time.Millisecond), hostileWorkers, float64(keys)/took.Seconds())
	t.Logf("%d samples: peak Len %d (MaxEntries %d), peak concurrent builds %d (MaxConcurrentBuilds %d), peak map size %d (bound %d)",
		samples, peakLen, hostileMaxEntries, peakBuilds.Load(), hostileMaxBuilds, peakMap, maxMap)
	t.Logf("%d pauses between calls: map entries at most %d pending, %d found, %d remembered errors (bound %d in all, nothing pending)",
		pauses, peakPaused[0], peakPaused[1], peakPaused[2], maxMapPaused)
	t.Logf("goroutines: %d before, peak %d (bound %d); live heap: %.1f MiB before, peak %.1f MiB, %.1f MiB at the end (bound: before + %d MiB)",
		baseG, peakG, baseG+hostileGoroutines, mib(baseHeap), mib(peakHeap), mib(endHeap), hostileHeap>>20)
	t.Logf("Stats at the end: Entries %d, Pending %d, Builds %d, BuildErrors %d, ErrorHits %d, Evictions %d, Closes %d",
		s.Entries, s.Pending, s.Builds, s.BuildErrors, s.ErrorHits, s.Evictions, s.Closes)

	if peakLen > hostileMaxEntries {
		t.Errorf("Len reached %d; MaxEntries is %d", peakLen, hostileMaxEntries)
	}
	if p := peakBuilds.Load(); p > hostileMaxBuilds {
		t.Errorf("%d builds ran at once; MaxConcurrentBuilds is %d", p, hostileMaxBuilds)
	}
	if peakMap > maxMap {
		t.Errorf("the map held %d entries; want at most MaxEntries + MaxErrorEntries + 2 per caller = %d", peakMap, maxMap)
	}
	if pauses == 0 {
		t.Error("the sampler never paused the callers")
	}
	if p := peakPaused; p[0] != 0 || p[1] > hostileMaxEntries || p[2] > c.opts.MaxErrorEntries {
		t.Errorf("between calls the map held %d pending, %d found and %d failed entries; want 0, at most MaxEntries = %d, at most MaxErrorEntries = %d",
			p[0], p[1], p[2], hostileMaxEntries, c.opts.MaxErrorEntries)
	}
	if peakG > baseG+hostileGoroutines {
		t.Errorf("%d goroutines at the peak; want at most %d + %d", peakG, baseG, hostileGoroutines)
	}
	for what, h := range map[string]uint64{"peak": peakHeap, "end": endHeap} {
		if h > baseHeap+hostileHeap {
			t.Errorf("live heap at the %s: %.1f MiB; want at most %.1f MiB + %d MiB", what, mib(h), mib(baseHeap), hostileHeap>>20)
		}
	}
	if n := builds.Load(); n != int64(keys) {
		t.Errorf("%d builds for %d distinct keys; want one each", n, keys)
	}
	if got, want := closes.Load(), builds.Load()-failed.Load(); got != want {
		t.Errorf("%d values closed after Shutdown; want %d", got, want)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
