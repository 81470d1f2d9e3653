package rescache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/leanovate/gopter"
	"github.com/leanovate/gopter/commands"
	"github.com/leanovate/gopter/gen"
	"github.com/leanovate/gopter/prop"
)

// propertyRuns returns how many cases a property runs: def by default,
// RESCACHE_PROPERTY_RUNS when set.
func propertyRuns(t *testing.T, def int) int {
	if s := os.Getenv("RESCACHE_PROPERTY_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("RESCACHE_PROPERTY_RUNS=%q: want a positive number", s)
		}
		return n
	}
	return def
}

// The stateful property: random sequences of Get, Acquire, release,
// Invalidate, time advancing and Close, run against the cache and against a
// model (a map of entries with their last use, which gives the LRU order,
// plus counters of builds and closes per value). Time is synctest's fake
// time; every command starts one clock tick after the previous one, so that
// every use has its own stamp and the LRU order is exact.

const (
	modelKeys     = 5
	modelMax      = 3
	modelIdle     = 200 * time.Millisecond
	modelLifetime = 500 * time.Millisecond
	modelTick     = 10 * time.Millisecond
)

// mval names one built value: the gen-th build of key.
type mval struct{ key, gen int }

type mentry struct {
	gen         int
	built, used time.Duration
}

// model is the expected state. NextState functions copy it before changing
// it, since gopter replays states when it shrinks.
type model struct {
	max     int // MaxEntries
	now     time.Duration
	entries map[int]mentry
	builds  map[int]int
	leases  []mval       // outstanding leases, in the order taken
	byLease []bool       // for each of leases: taken with Lease (so it can Discard), not Acquire
	closes  map[mval]int // how often each value was closed
	closed  bool

	want obs // what the last command must have observed
}

func (m *model) clone() *model {
	n := *m
	n.entries = maps.Clone(m.entries)
	n.builds = maps.Clone(m.builds)
	n.leases = slices.Clone(m.leases)
	n.byLease = slices.Clone(m.byLease)
	n.closes = maps.Clone(m.closes)
	return &n
}

func (m *model) leased(v mval) bool { return slices.Contains(m.leases, v) }

// remove takes key's entry out, closing its value unless leased.
func (m *model) remove(key int) {
	e := m.entries[key]
	delete(m.entries, key)
	if v := (mval{key, e.gen}); !m.leased(v) {
		m.closes[v]++
	}
}

// tick advances time by d and expires what the janitor sweeps.
func (m *model) tick(d time.Duration) {
	m.now += d
	for _, k := range slices.Sorted(maps.Keys(m.entries)) {
		e := m.entries[k]
		idle := m.now-e.used >= modelIdle && !m.leased(mval{k, e.gen})
		if idle || m.now-e.built >= modelLifetime {
			m.remove(k)
		}
	}
}

// get is Get or Acquire of key in the model; it returns the value's gen.
func (m *model) get(key int) int {
	if e, ok := m.entries[key]; ok {
		e.used = m.now
		m.entries[key] = e
		return e.gen
	}
	if len(m.entries) >= m.max {
		lru, first := 0, true
		for k, e := range m.entries {
			if first || e.used < m.entries[lru].used {
				lru, first = k, false
			}
		}
		m.remove(lru)
	}
	m.builds[key]++
	gen := m.builds[key]
	m.entries[key] = mentry{gen: gen, built: m.now, used: m.now}
	return gen
}

// obs is what a command observed.
type obs struct {
	gen    int  // the value's gen, for Get and Acquire
	closed bool // ErrClosed
	len    int
	leased int
	closes map[mval]int
}

// sys is the system under test.
type sys struct {
	c      *Cache[int, *pval]
	builds map[int]int
	vals   []*pval
	leases []held
}

type pval struct {
	mval
	closes atomic.Int32
}

type held struct {
	v       *pval
	release func()
	discard func() // nil for a lease from Acquire
}

func (s *sys) observe(gen int, err error) obs {
	synctest.Wait() // the hooks of entries another key's build evicted run on the hook goroutine
	o := obs{gen: gen, closed: errors.Is(err, ErrClosed), len: s.c.Len(), leased: s.c.Stats().Leased, closes: map[mval]int{}}
	for _, v := range s.vals {
		if n := v.closes.Load(); n > 0 {
			o.closes[v.mval] = int(n)
		}
	}
	return o
}

// cmd builds a command that first lets one tick pass (in the system and the
// model), then runs run and applies next.
func cmd(name string, run func(*sys) obs, next func(*model) obs) commands.Command {
	return &commands.ProtoCommand{
		Name: name,
		RunFunc: func(s commands.SystemUnderTest) commands.Result {
			time.Sleep(modelTick)
			synctest.Wait() // the janitor's sweep of this tick is done
			return run(s.(*sys))
		},
		NextStateFunc: func(st commands.State) commands.State {
			m := st.(*model).clone()
			m.tick(modelTick)
			m.want = next(m)
			return m
		},
		PostConditionFunc: func(st commands.State, r commands.Result) *gopter.PropResult {
			m, got := st.(*model), r.(obs)
			want := m.want
			want.len, want.leased = len(m.entries), len(m.leases)
			if m.closed {
				want.len = 0
			}
			want.closes = map[mval]int{}
			for v, n := range m.closes {
				if n > 0 {
					want.closes[v] = n
				}
			}
			if got.gen != want.gen || got.closed != want.closed || got.len != want.len ||
				got.leased != want.leased || !maps.Equal(got.closes, want.closes) {
				return &gopter.PropResult{Status: gopter.PropFalse, Error: fmt.Errorf("%s at %v: got %+v; want %+v", name, m.now, got, want)}
			}
			return &gopter.PropResult{Status: gopter.PropTrue}
		},
	}
}

func getCmd(key int, acquire bool) commands.Command {
	name := fmt.Sprintf("Get(%d)", key)
	if acquire {
		name = fmt.Sprintf("Acquire(%d)", key)
	}
	return cmd(name, func(s *sys) obs {
		var v *pval
		var err error
		if acquire {
			var release func()
			v, release, err = s.c.Acquire(context.Background(), key)
			if err == nil {
				s.leases = append(s.leases, held{v, release, nil})
			}
		} else {
			v, err = s.c.Get(context.Background(), key)
		}
		if err != nil {
			return s.observe(0, err)
		}
		return s.observe(v.gen, nil)
	}, func(m *model) obs {
		if m.closed {
			return obs{closed: true}
		}
		gen := m.get(key)
		if acquire {
			m.leases = append(m.leases, mval{key, gen})
			m.byLease = append(m.byLease, false)
		}
		return obs{gen: gen}
	})
}

func releaseCmd(i int) commands.Command {
	return cmd(fmt.Sprintf("release(#%d)", i), func(s *sys) obs {
		if len(s.leases) > 0 {
			j := i % len(s.leases)
			s.leases[j].release()
			s.leases[j].release() // idempotent
			s.leases = slices.Delete(s.leases, j, j+1)
		}
		return s.observe(0, nil)
	}, func(m *model) obs {
		if len(m.leases) > 0 {
			j := i % len(m.leases)
			v := m.leases[j]
			m.leases = slices.Delete(m.leases, j, j+1)
			m.byLease = slices.Delete(m.byLease, j, j+1)
			if e, ok := m.entries[v.key]; ok && e.gen == v.gen {
				e.used = m.now // a release counts as a use
				m.entries[v.key] = e
			} else if !m.leased(v) {
				m.closes[v]++ // evicted while leased: closed at its last release
			}
		}
		return obs{}
	})
}

// leaseCmd takes a Lease (rather than Acquire's release func).
func leaseCmd(key int) commands.Command {
	return cmd(fmt.Sprintf("Lease(%d)", key), func(s *sys) obs {
		l, err := s.c.Lease(context.Background(), key)
		if err != nil {
			return s.observe(0, err)
		}
		s.leases = append(s.leases, held{l.Value(), l.Release, l.Discard})
		return s.observe(l.Value().gen, nil)
	}, func(m *model) obs {
		if m.closed {
			return obs{closed: true}
		}
		gen := m.get(key)
		m.leases = append(m.leases, mval{key, gen})
		m.byLease = append(m.byLease, true)
		return obs{gen: gen}
	})
}

// discardCmd discards the i-th lease (releases it when it came from
// Acquire): the entry leaves if it still holds that value.
func discardCmd(i int) commands.Command {
	return cmd(fmt.Sprintf("Discard(#%d)", i), func(s *sys) obs {
		if len(s.leases) > 0 {
			j := i % len(s.leases)
			if d := s.leases[j].discard; d != nil {
				d()
				d() // idempotent
			} else {
				s.leases[j].release()
			}
			s.leases = slices.Delete(s.leases, j, j+1)
		}
		return s.observe(0, nil)
	}, func(m *model) obs {
		if len(m.leases) > 0 {
			j := i % len(m.leases)
			v, discard := m.leases[j], m.byLease[j]
			m.leases = slices.Delete(m.leases, j, j+1)
			m.byLease = slices.Delete(m.byLease, j, j+1)
			e, ok := m.entries[v.key]
			switch {
			case ok && e.gen == v.gen && discard:
				m.remove(v.key)
			case ok && e.gen == v.gen:
				e.used = m.now // a release counts as a use
				m.entries[v.key] = e
			case !m.leased(v):
				m.closes[v]++
			}
		}
		return obs{}
	})
}

// refreshCmd refreshes key: a new build replaces the current value (the old
// one closes at its last release), or, for an absent key, builds it.
func refreshCmd(key int) commands.Command {
	return cmd(fmt.Sprintf("Refresh(%d)", key), func(s *sys) obs {
		return s.observe(0, s.c.Refresh(context.Background(), key))
	}, func(m *model) obs {
		if m.closed {
			return obs{closed: true}
		}
		if _, ok := m.entries[key]; !ok {
			m.get(key)
			return obs{}
		}
		m.remove(key)
		m.builds[key]++
		m.entries[key] = mentry{gen: m.builds[key], built: m.now, used: m.now}
		return obs{}
	})
}

func invalidateCmd(key int) commands.Command {
	return cmd(fmt.Sprintf("Invalidate(%d)", key), func(s *sys) obs {
		s.c.Invalidate(key)
		return s.observe(0, nil)
	}, func(m *model) obs {
		if _, ok := m.entries[key]; ok {
			m.remove(key)
		}
		return obs{}
	})
}

func advanceCmd(ticks int) commands.Command {
	d := time.Duration(ticks) * modelTick
	return cmd(fmt.Sprintf("advance(%v)", d), func(s *sys) obs {
		time.Sleep(d)
		synctest.Wait()
		return s.observe(0, nil)
	}, func(m *model) obs {
		m.tick(d)
		return obs{}
	})
}

func closeCmd() commands.Command {
	return cmd("Close", func(s *sys) obs {
		s.c.Close()
		return s.observe(0, nil)
	}, func(m *model) obs {
		if !m.closed {
			m.closed = true
			for _, k := range slices.Sorted(maps.Keys(m.entries)) {
				m.remove(k)
			}
		}
		return obs{}
	})
}

// TestPropertyMatchesModel runs the model with LRU, and with TinyLFU at a
// MaxEntries that the model's keys never reach: the model's LRU choice of
// a victim does not apply to TinyLFU (TestPropertyTinyLFUInvariants checks
// its evictions), everything else (leases, idle time, lifetime,
// Invalidate, Close) must match exactly.
func TestPropertyMatchesModel(t *testing.T) {
	t.Run("LRU", func(t *testing.T) { testPropertyMatchesModel(t, LRU, modelMax) })
	t.Run("TinyLFU", func(t *testing.T) { testPropertyMatchesModel(t, TinyLFU, modelKeys) })
}

func testPropertyMatchesModel(t *testing.T, policy Policy, maxEntries int) {
	synctest.Test(t, func(t *testing.T) {
		params := gopter.DefaultTestParameters()
		params.MinSuccessfulTests = propertyRuns(t, 300)
		params.MaxSize = 60 // commands per sequence
		params.Rng.Seed(time.Now().UnixNano())

		key := gen.IntRange(0, modelKeys-1)
		proto := &commands.ProtoCommands{
			NewSystemUnderTestFunc: func(commands.State) commands.SystemUnderTest {
				s := &sys{builds: map[int]int{}}
				c, err := New(func(_ context.Context, key int) (*pval, error) {
					s.builds[key]++
					v := &pval{mval: mval{key, s.builds[key]}}
					s.vals = append(s.vals, v)
					return v, nil
				}, &Options[int, *pval]{
					MaxEntries:      maxEntries,
					Policy:          policy,
					IdleTimeout:     modelIdle,
					MaxLifetime:     modelLifetime,
					ClockResolution: modelTick,
					Close:           func(_ int, v *pval) error { v.closes.Add(1); return nil },
				})
				if err != nil {
					t.Fatal(err)
				}
				s.c = c
				return s
			},
			DestroySystemUnderTestFunc: func(st commands.SystemUnderTest) {
				s := st.(*sys)
				for _, l := range s.leases {
					l.release()
				}
				if err := s.c.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
				for _, v := range s.vals {
					if n := v.closes.Load(); n != 1 {
						t.Errorf("value %+v closed %d times after Shutdown; want 1", v.mval, n)
					}
				}
			},
			InitialStateGen: gen.Const(&model{max: maxEntries, entries: map[int]mentry{}, builds: map[int]int{}, closes: map[mval]int{}}),
			GenCommandFunc: func(commands.State) gopter.Gen {
				return gen.Weighted([]gen.WeightedGen{
					{Weight: 10, Gen: key.Map(func(k int) commands.Command { return getCmd(k, false) })},
					{Weight: 6, Gen: key.Map(func(k int) commands.Command { return getCmd(k, true) })},
					{Weight: 6, Gen: gen.IntRange(0, 7).Map(func(i int) commands.Command { return releaseCmd(i) })},
					{Weight: 3, Gen: key.Map(func(k int) commands.Command { return invalidateCmd(k) })},
					{Weight: 4, Gen: key.Map(func(k int) commands.Command { return leaseCmd(k) })},
					{Weight: 2, Gen: gen.IntRange(0, 7).Map(func(i int) commands.Command { return discardCmd(i) })},
					{Weight: 2, Gen: key.Map(func(k int) commands.Command { return refreshCmd(k) })},
					{Weight: 4, Gen: gen.IntRange(1, 40).Map(func(n int) commands.Command { return advanceCmd(n) })},
					{Weight: 1, Gen: gen.Const(closeCmd())},
				})
			},
		}
		props := gopter.NewProperties(params)
		props.Property("the cache behaves like its model", commands.Prop(proto))
		props.TestingRun(t)
	})
}

// TestPropertyConcurrent: many goroutines over few keys, with random build
// delays, errors, panics and Goexits (which end the worker that ran the
// build inline), nested Gets of other keys, random lease spans,
// slow Closes and a small MaxEntries. Checked in every case: no key is
// built while a build of it runs or while its entry is found (no double
// build while the entry lives), no value is closed while leased, the
// values open never exceed MaxEntries' bound, and after Shutdown every
// value built was closed exactly once and nothing is pending. (Refresh,
// whose build runs while its entry is found, is the fault injection's.)
// Each case runs with LRU or TinyLFU.
func TestPropertyConcurrent(t *testing.T) {
	params := gopter.DefaultTestParameters()
	params.MinSuccessfulTests = propertyRuns(t, 100)
	params.Rng.Seed(time.Now().UnixNano())
	props := gopter.NewProperties(params)
	props.Property("one build per live entry, no close under a lease, every value closed once", prop.ForAll(
		func(seed uint64, workers, keys, maxEntries int, tinyLFU bool) string {
			policy := LRU
			if tinyLFU {
				policy = TinyLFU
			}
			return runConcurrentCase(seed, workers, keys, maxEntries, policy)
		},
		gen.UInt64(), gen.IntRange(2, 12), gen.IntRange(1, 6), gen.IntRange(0, 4), gen.Bool(),
	))
	props.TestingRun(t)
}

// cval is a value of the concurrent property.
type cval struct {
	key    int
	leases atomic.Int32 // leases the test holds on it
	closes atomic.Int32
}

// runConcurrentCase runs one case and returns the first violation, or "".
func runConcurrentCase(seed uint64, workers, keys, maxEntries int, policy Policy) (violation string) {
	var mu sync.Mutex
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if violation == "" {
			violation = fmt.Sprintf(format, args...)
		}
	}
	building := make([]atomic.Int32, keys)
	var vals []*cval
	var open, peak atomic.Int64 // values built and not yet closed
	var c *Cache[int, *cval]
	c, err := New(func(ctx context.Context, key int) (*cval, error) {
		if n := building[key].Add(1); n != 1 {
			fail("key %d: %d builds at once", key, n)
		}
		defer building[key].Add(-1)
		if _, ok := c.Peek(key); ok {
			fail("key %d built while its entry is found", key)
		}
		r := rand.New(rand.NewPCG(seed, uint64(key)))
		time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
		switch r.IntN(13) {
		case 0:
			return nil, errors.New("build failed")
		case 1:
			panic("build panicked")
		case 2:
			runtime.Goexit()
		case 3:
			if key+1 < keys { // nested, of a key above: no cycle across callers
				c.Get(ctx, key+1)
			}
		}
		v := &cval{key: key}
		if n := open.Add(1); n > peak.Load() {
			peak.Store(n) // a high-water mark; racy stores only lower it
		}
		mu.Lock()
		vals = append(vals, v)
		mu.Unlock()
		return v, nil
	}, &Options[int, *cval]{
		MaxEntries: maxEntries,
		Policy:     policy,
		Close: func(_ int, v *cval) error {
			if n := v.leases.Load(); n != 0 {
				fail("value of key %d closed with %d leases out", v.key, n)
			}
			v.closes.Add(1)
			open.Add(-1)
			if r := rand.New(rand.NewPCG(seed, uint64(v.key)<<32|uint64(v.closes.Load()))); r.IntN(3) == 0 {
				time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond) // a slow Close
			}
			return nil
		},
	})
	if err != nil {
		return err.Error()
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(1000+w)))
			for range 50 {
				key := r.IntN(keys)
				if r.IntN(2) == 0 {
					c.Get(context.Background(), key)
					continue
				}
				v, release, err := c.Acquire(context.Background(), key)
				if err != nil {
					continue
				}
				v.leases.Add(1)
				time.Sleep(time.Duration(r.IntN(100)) * time.Microsecond)
				if v.closes.Load() != 0 {
					fail("value of key %d closed during its lease", key)
				}
				v.leases.Add(-1)
				release()
			}
		}()
	}
	wg.Wait()
	// MaxEntries bounds the values open: beyond it, max(MaxConcurrentBuilds,
	// 16) units, the removed values a lease keeps open (at most one per
	// worker here) and the nested builds' values (at most one per key).
	if bound := int64(maxEntries + closeBacklog + workers + keys); maxEntries > 0 && peak.Load() > bound {
		fail("%d values open at once; MaxEntries %d allows %d here", peak.Load(), maxEntries, bound)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		return "Shutdown: " + err.Error()
	}
	if s := c.Stats(); s.Pending != 0 || s.Leased != 0 || s.Entries != 0 {
		fail("after Shutdown: %+v", s)
	}
	for _, v := range vals {
		if n := v.closes.Load(); n != 1 {
			fail("value of key %d closed %d times; want 1", v.key, n)
		}
	}
	return violation
}
