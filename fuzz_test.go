package rescache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzCacheOps decodes its input into options and a sequence of operations
// on a few keys (Get, Acquire, release, Invalidate, Peek, Range, time
// advancing, Close), runs them one after the other in a synctest bubble, and
// after each one compares the cache with a model: the found entries and
// their values, Len, every counter of Stats, which values are closed (each
// exactly once, and never while leased), and OnEvict's calls.
//
// Operations that do not advance time share a clock tick, so several
// entries may have been used in the same tick; the cache may then evict any
// of them first (Options.MaxEntries), and the model accepts any of them and
// follows the cache's choice, which OnEvict reports.
//
// Input layout: five bytes of options, then one byte per operation (high
// nibble: the operation; low nibble: its argument).

const (
	fuzzKeys   = 4
	fuzzTick   = time.Second // the cache's ClockResolution
	fuzzMaxOps = 256
)

var (
	errFuzzBuild = errors.New("fuzz: build failed")
	errFuzzClose = errors.New("fuzz: close failed")
)

const fuzzPanic = "fuzz: build panicked"

func FuzzCacheOps(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzCacheOps.
	f.Add([]byte{2, 3, 5, 2, 0, 0x00, 0x01, 0x02, 0x03, 0x00, 0xb2, 0x01, 0xc9, 0x00})
	f.Add([]byte{1, 0, 0, 4, 1, 0x48, 0x4c, 0x41, 0x90, 0x08, 0xb0, 0x08, 0x70, 0x9c, 0xa1})
	f.Fuzz(func(t *testing.T, data []byte) {
		synctest.Test(t, func(t *testing.T) {
			r := newFuzzRun(t, data)
			r.run()
		})
	})
}

// fuzzVal is a built value. leases is the number of leases the run holds
// on it; the Closer checks it is zero.
type fuzzVal struct {
	key, gen int
	leases   atomic.Int32
	closes   atomic.Int32
	removed  bool // in the model: its entry left the cache
}

func (v *fuzzVal) String() string { return fmt.Sprintf("%d#%d", v.key, v.gen) }

type fuzzEntry struct {
	v           *fuzzVal
	built, used int // ticks
}

type fuzzErr struct {
	key   int
	err   error
	until int // ticks
}

type fuzzEvict struct {
	key    int
	v      *fuzzVal
	reason EvictReason
}

type fuzzLease struct {
	v       *fuzzVal
	release func()
}

// fuzzRun holds the cache, the model and the harness's state.
type fuzzRun struct {
	t   *testing.T
	c   *Cache[int, *fuzzVal]
	ops []byte

	// Options, in ticks (0 = off).
	maxEntries, idle, life, errTTL, maxErrs int

	// The model.
	now     int
	entries map[int]*fuzzEntry
	errs    []fuzzErr // remembered errors, oldest failure first
	closed  bool
	want    Stats // the counters only; gauges are checked apart
	builds  map[int]int

	// The harness.
	vals    []*fuzzVal
	leases  []fuzzLease
	outcome byte // of the next build: 0 success, 1 error, 2 panic

	mu      sync.Mutex  // protects evicted (OnEvict may run on the janitor)
	evicted []fuzzEvict // OnEvict calls not yet checked
}

func newFuzzRun(t *testing.T, data []byte) *fuzzRun {
	var hdr [5]byte
	n := copy(hdr[:], data)
	r := &fuzzRun{
		t:       t,
		ops:     data[n:],
		entries: map[int]*fuzzEntry{},
		builds:  map[int]int{},
	}
	if len(r.ops) > fuzzMaxOps {
		r.ops = r.ops[:fuzzMaxOps]
	}
	r.want.EvictionsByReason = map[EvictReason]uint64{}
	r.maxEntries = int(hdr[0] % 5)
	if v := int(hdr[1] % 8); v >= 2 {
		r.idle = v
	}
	if v := int(hdr[2] % 16); v >= 3 {
		r.life = v
	}
	if v := int(hdr[3] % 8); v >= 2 {
		r.errTTL = v - 1
	}
	r.maxErrs = int(hdr[4] % 3)

	c, err := New(r.build, &Options[int, *fuzzVal]{
		MaxEntries:      r.maxEntries,
		IdleTimeout:     time.Duration(r.idle) * fuzzTick,
		MaxLifetime:     time.Duration(r.life) * fuzzTick,
		ErrorTTL:        time.Duration(r.errTTL) * fuzzTick,
		MaxErrorEntries: r.maxErrs,
		ClockResolution: fuzzTick,
		Close:           r.close,
		OnEvict:         r.onEvict,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() }) // stops the janitor if the run fails
	r.c = c
	return r
}

func (r *fuzzRun) build(_ context.Context, key int) (*fuzzVal, error) {
	r.builds[key]++
	gen := r.builds[key]
	switch r.outcome {
	case 1:
		return nil, fmt.Errorf("build %d#%d: %w", key, gen, errFuzzBuild)
	case 2:
		panic(fuzzPanic)
	}
	v := &fuzzVal{key: key, gen: gen}
	r.vals = append(r.vals, v)
	return v, nil
}

func (r *fuzzRun) close(key int, v *fuzzVal) error {
	if n := v.leases.Load(); n != 0 {
		r.t.Errorf("value %v closed while %d leases hold it", v, n)
	}
	if v.key != key {
		r.t.Errorf("Close(%d, %v)", key, v)
	}
	v.closes.Add(1)
	if v.gen%3 == 0 {
		return errFuzzClose
	}
	return nil
}

func (r *fuzzRun) onEvict(key int, v *fuzzVal, reason EvictReason) {
	r.mu.Lock()
	r.evicted = append(r.evicted, fuzzEvict{key, v, reason})
	r.mu.Unlock()
}

func (r *fuzzRun) errCap() int {
	switch {
	case r.maxErrs > 0:
		return r.maxErrs
	case r.maxEntries > 0:
		return r.maxEntries
	}
	return defaultMaxErrorEntries
}

func (r *fuzzRun) run() {
	t := r.t
	for i, b := range r.ops {
		op, arg := b>>4, b&15
		key := int(arg % fuzzKeys)
		var name string
		switch op {
		case 0, 1, 2, 3:
			name = fmt.Sprintf("Get(%d, outcome %d)", key, arg>>2%3)
			r.call(key, arg>>2%3, false)
		case 4, 5, 6:
			name = fmt.Sprintf("Acquire(%d, outcome %d)", key, arg>>2%3)
			r.call(key, arg>>2%3, true)
		case 7, 8:
			name = "release"
			r.release(int(arg), op == 8)
		case 9:
			name = fmt.Sprintf("Invalidate(%d)", key)
			r.invalidate(key)
		case 10:
			name = fmt.Sprintf("Peek(%d)", key)
			r.peek(key)
		case 11, 12, 13:
			name = fmt.Sprintf("advance %d ticks", arg+1)
			r.advance(int(arg) + 1)
		case 14:
			if arg == 15 {
				name = "Close"
				r.closeCache()
			} else {
				name = "Range"
				r.rangeAll()
			}
		default:
			name = "Stats"
		}
		r.check(fmt.Sprintf("op %d (%s) at tick %d", i, name, r.now))
		if t.Failed() {
			t.FailNow()
		}
	}
	r.finish()
}

// call is Get or Acquire of key; a build it starts has the given outcome.
func (r *fuzzRun) call(key int, outcome byte, lease bool) {
	t := r.t
	r.outcome = outcome
	var (
		v       *fuzzVal
		release func()
		err     error
	)
	if lease {
		v, release, err = r.c.Acquire(context.Background(), key)
	} else {
		v, err = r.c.Get(context.Background(), key)
	}

	// The model's answer.
	var wantV *fuzzVal
	var wantErr error
	built := false
	switch e, ok := r.entries[key]; {
	case r.closed:
		wantErr = ErrClosed
	case ok:
		r.want.Hits++
		e.used = r.now
		wantV = e.v
	case r.rememberedErr(key) != nil:
		r.want.ErrorHits++
		wantErr = r.rememberedErr(key)
	default:
		built = true
		r.want.Misses++
		r.want.Builds++
	}

	if built {
		switch outcome {
		case 0:
			if err != nil || v == nil || v.key != key || v.gen != r.builds[key] {
				t.Fatalf("Get or Acquire(%d) = %v, %v; want build %d#%d", key, v, err, key, r.builds[key])
			}
			if r.maxEntries > 0 && len(r.entries) >= r.maxEntries {
				r.expectCapacityEviction()
			}
			r.entries[key] = &fuzzEntry{v: v, built: r.now, used: r.now}
			wantV = v
		case 1:
			r.want.BuildErrors++
			if !errors.Is(err, errFuzzBuild) {
				t.Fatalf("Get or Acquire(%d) = %v; want the build's error", key, err)
			}
			r.remember(key, err)
			return
		case 2:
			r.want.BuildErrors++
			r.want.BuildPanics++
			var pe *PanicError
			if !errors.As(err, &pe) || pe.Value != fuzzPanic || pe.Key != key {
				t.Fatalf("Get or Acquire(%d) = %v; want a *PanicError", key, err)
			}
			return // a panic is never remembered, even with ErrorTTL
		}
	}
	if wantErr != nil {
		if err != wantErr && !(wantErr == ErrClosed && errors.Is(err, ErrClosed)) {
			t.Fatalf("Get or Acquire(%d) = %v, %v; want error %v", key, v, err, wantErr)
		}
		if lease {
			release() // a no-op
		}
		return
	}
	if err != nil || v != wantV {
		t.Fatalf("Get or Acquire(%d) = %v, %v; want %v", key, v, err, wantV)
	}
	if lease {
		v.leases.Add(1)
		r.leases = append(r.leases, fuzzLease{v, release})
	}
}

func (r *fuzzRun) rememberedErr(key int) error {
	for _, e := range r.errs {
		if e.key == key && r.now < e.until {
			return e.err
		}
	}
	return nil
}

func (r *fuzzRun) remember(key int, err error) {
	if r.errTTL == 0 {
		return
	}
	r.errs = append(r.errs, fuzzErr{key, err, r.now + r.errTTL})
	if len(r.errs) > r.errCap() {
		r.errs = r.errs[1:]
	}
}

func (r *fuzzRun) forget(key int) bool {
	for i, e := range r.errs {
		if e.key == key {
			r.errs = slices.Delete(r.errs, i, i+1)
			return true
		}
	}
	return false
}

// remove takes key's found entry out of the model, expecting OnEvict and,
// unless leased, a close.
func (r *fuzzRun) remove(key int, reason EvictReason) fuzzEvict {
	e := r.entries[key]
	delete(r.entries, key)
	e.v.removed = true
	r.want.Evictions++
	r.want.EvictionsByReason[reason]++
	r.closedByModel(e.v)
	return fuzzEvict{key, e.v, reason}
}

// closedByModel counts the close of v if no lease holds it.
func (r *fuzzRun) closedByModel(v *fuzzVal) {
	if v.removed && v.leases.Load() == 0 {
		r.want.Closes++
		if v.gen%3 == 0 {
			r.want.CloseErrors++
		}
	}
}

// expectCapacityEviction checks that the cache evicted, to make room, one
// of the entries the model says were least recently used, and follows it.
func (r *fuzzRun) expectCapacityEviction() {
	got := r.takeEvicted()
	if len(got) != 1 || got[0].reason != EvictCapacity {
		r.t.Fatalf("a build into a full cache (MaxEntries %d) evicted %v; want one entry for capacity", r.maxEntries, got)
	}
	lru := slices.Min(slices.Collect(func(yield func(int) bool) {
		for _, e := range r.entries {
			if !yield(e.used) {
				return
			}
		}
	}))
	e, ok := r.entries[got[0].key]
	if !ok || e.v != got[0].v {
		r.t.Fatalf("evicted %d (%v) for capacity; the model holds %v there", got[0].key, got[0].v, e)
	}
	if e.used != lru {
		r.t.Fatalf("evicted %d, last used at tick %d, for capacity; the least recently used was used at tick %d", got[0].key, e.used, lru)
	}
	r.remove(got[0].key, EvictCapacity)
}

func (r *fuzzRun) takeEvicted() []fuzzEvict {
	synctest.Wait() // hooks of capacity and expiry evictions run on the hook goroutine
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.evicted
	r.evicted = nil
	return got
}

func (r *fuzzRun) release(i int, twice bool) {
	if len(r.leases) == 0 {
		return
	}
	i %= len(r.leases)
	l := r.leases[i]
	r.leases = slices.Delete(r.leases, i, i+1)
	if l.v.closes.Load() != 0 {
		r.t.Fatalf("leased value %v was closed", l.v)
	}
	l.v.leases.Add(-1)
	l.release()
	if twice {
		l.release() // a no-op
	}
	if e, ok := r.entries[l.v.key]; ok && e.v == l.v && r.maxEntries+r.idle+r.life+r.errTTL > 0 {
		e.used = r.now // a release is a use
	}
	r.closedByModel(l.v)
}

func (r *fuzzRun) invalidate(key int) {
	got := r.c.Invalidate(key)
	want := false
	var evicted []fuzzEvict
	if _, ok := r.entries[key]; ok && !r.closed {
		want = true
		evicted = append(evicted, r.remove(key, EvictInvalidated))
	} else if !r.closed && r.forget(key) {
		want = true
	}
	if got != want {
		r.t.Fatalf("Invalidate(%d) = %v; want %v", key, got, want)
	}
	r.expectEvicted(evicted)
}

func (r *fuzzRun) peek(key int) {
	v, ok := r.c.Peek(key)
	e, want := r.entries[key]
	if ok != want || ok && v != e.v {
		r.t.Fatalf("Peek(%d) = %v, %v; want %v", key, v, ok, e)
	}
}

func (r *fuzzRun) rangeAll() {
	got := map[int]*fuzzVal{}
	r.c.Range(func(k int, v *fuzzVal) bool {
		got[k] = v
		return true
	})
	want := map[int]*fuzzVal{}
	for k, e := range r.entries {
		want[k] = e.v
	}
	if !maps.Equal(got, want) {
		r.t.Fatalf("Range saw %v; want %v", got, want)
	}
}

// advance lets n ticks pass, in the cache (whose janitor sweeps at every
// tick) and in the model.
func (r *fuzzRun) advance(n int) {
	time.Sleep(time.Duration(n) * fuzzTick)
	synctest.Wait() // the janitor has swept every tick
	var want []fuzzEvict
	for range n {
		r.now++
		for _, k := range slices.Sorted(maps.Keys(r.entries)) {
			e := r.entries[k]
			switch {
			case r.life > 0 && r.now-e.built >= r.life:
				want = append(want, r.remove(k, EvictLifetime))
			case r.idle > 0 && r.now-e.used >= r.idle && e.v.leases.Load() == 0:
				want = append(want, r.remove(k, EvictIdle))
			}
		}
		r.errs = slices.DeleteFunc(r.errs, func(e fuzzErr) bool { return r.now >= e.until })
	}
	r.expectEvicted(want)
}

func (r *fuzzRun) closeCache() {
	var want []fuzzEvict
	if !r.closed {
		for _, k := range slices.Sorted(maps.Keys(r.entries)) {
			want = append(want, r.remove(k, EvictClosed))
		}
		r.errs = nil
		r.closed = true
	}
	err := r.c.Close()
	if err != nil && !errors.Is(err, errFuzzClose) {
		r.t.Fatalf("Close = %v", err)
	}
	r.expectEvicted(want)
}

// expectEvicted checks OnEvict's calls since the last check against want,
// in any order.
func (r *fuzzRun) expectEvicted(want []fuzzEvict) {
	got := r.takeEvicted()
	key := func(e fuzzEvict) string { return fmt.Sprintf("%d:%v:%v", e.key, e.v, e.reason) }
	g, w := make([]string, len(got)), make([]string, len(want))
	for i, e := range got {
		g[i] = key(e)
	}
	for i, e := range want {
		w[i] = key(e)
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		r.t.Fatalf("OnEvict calls %v; want %v", g, w)
	}
}

// check compares the cache with the model.
func (r *fuzzRun) check(at string) {
	t := r.t
	if got := r.takeEvicted(); len(got) > 0 {
		t.Fatalf("%s: unexpected OnEvict calls %v", at, got)
	}
	s := r.c.Stats()
	if s.Entries != len(r.entries) || r.c.Len() != len(r.entries) {
		t.Fatalf("%s: Stats.Entries = %d, Len() = %d; want %d", at, s.Entries, r.c.Len(), len(r.entries))
	}
	if s.Pending != 0 || s.Leased != len(r.leases) {
		t.Fatalf("%s: Stats.Pending = %d, Leased = %d; want 0, %d", at, s.Pending, s.Leased, len(r.leases))
	}
	got, want := s, r.want
	got.BuildTime, got.Entries, got.Pending, got.Leased = 0, 0, 0, 0
	got.HealthChecks, got.HealthCheckErrors = 0, 0
	if !maps.Equal(got.EvictionsByReason, withAllReasons(want.EvictionsByReason)) {
		t.Fatalf("%s: Stats.EvictionsByReason = %v; want %v", at, got.EvictionsByReason, want.EvictionsByReason)
	}
	got.EvictionsByReason, want.EvictionsByReason = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: Stats =\n %+v; want\n %+v", at, got, want)
	}
	for _, v := range r.vals {
		wantCloses := int32(0)
		if v.removed && v.leases.Load() == 0 {
			wantCloses = 1
		}
		if n := v.closes.Load(); n != wantCloses {
			t.Fatalf("%s: value %v closed %d times; want %d (removed %v, %d leases)", at, v, n, wantCloses, v.removed, v.leases.Load())
		}
	}
}

func withAllReasons(m map[EvictReason]uint64) map[EvictReason]uint64 {
	out := map[EvictReason]uint64{}
	for _, r := range EvictReasons() {
		out[r] = m[r]
	}
	return out
}

// finish releases every lease, shuts the cache down and checks that every
// value was closed exactly once and nothing is left pending.
func (r *fuzzRun) finish() {
	t := r.t
	for len(r.leases) > 0 {
		r.release(0, false)
	}
	// In fake time: a Shutdown that never returns fails here instead of
	// spinning the janitor's ticker for ever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := r.c.Shutdown(ctx); err != nil && !errors.Is(err, errFuzzClose) {
		t.Fatalf("Shutdown = %v (Stats %+v, inflight %d)", err, r.c.Stats(), r.c.inflight.Load())
	}
	for _, v := range r.vals {
		if n := v.closes.Load(); n != 1 {
			t.Fatalf("after Shutdown: value %v closed %d times; want 1", v, n)
		}
	}
	if s := r.c.Stats(); s.Closes != uint64(len(r.vals)) || s.Pending != 0 || s.Entries != 0 {
		t.Fatalf("after Shutdown: Stats = %+v; want %d closes, nothing pending or found", s, len(r.vals))
	}
	r.c.m.Range(func(k int, e *entry[int, *fuzzVal]) bool {
		if e.word.Load()&(valuedBit|failedBit) == 0 {
			t.Errorf("after Shutdown: key %d is pending", k)
		}
		return true
	})
}
