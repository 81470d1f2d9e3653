package rescache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of refresh: Refresh and RefreshAfter replace a value without making
// callers wait, keep the old value on failure, share one build, take a build
// slot, back off, and spread lifetimes with jitter.

// gatedBuilder builds *resource values; a build waits while a gate is set,
// and fails while fail is set.
type gatedBuilder struct {
	builder
	mu   sync.Mutex
	gate chan struct{}
	fail atomic.Bool
}

func (g *gatedBuilder) build(ctx context.Context, key string) (*resource, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if g.fail.Load() {
		return nil, errClose
	}
	return g.builder.build(ctx, key)
}

// hold makes the next builds wait until open.
func (g *gatedBuilder) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *gatedBuilder) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

// evictLog records OnEvict calls as "key#gen:reason".
type evictLog struct {
	mu  sync.Mutex
	got []string
}

func (l *evictLog) onEvict(key string, r *resource, reason EvictReason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, key+"#"+strconv.Itoa(r.gen)+":"+reason.String())
}

func (l *evictLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.got, " ")
}

func TestRefreshReplacesWithoutMakingCallersWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		var evicted evictLog
		c := newTestCache(t, g.build, &Options[string, *resource]{OnEvict: evicted.onEvict})
		v1 := mustGet(t, c, "k")
		leased, err := c.Lease(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}

		g.hold()
		done := make(chan error, 1)
		go func() { done <- c.Refresh(context.Background(), "k") }()
		synctest.Wait() // the refresh's build waits at the gate
		if got := mustGet(t, c, "k"); got != v1 {
			t.Fatalf("Get during a refresh returned build #%d; want the current value #1", got.gen)
		}
		g.open()
		if err := <-done; err != nil {
			t.Fatalf("Refresh = %v", err)
		}
		v2 := mustGet(t, c, "k")
		if v2.gen != 2 {
			t.Fatalf("Get after Refresh returned build #%d; want #2", v2.gen)
		}
		synctest.Wait() // OnEvict of the old value runs on the refresh's goroutine, after the swap
		if got := evicted.String(); got != "k#1:replaced" {
			t.Errorf("OnEvict calls %q; want k#1:replaced", got)
		}
		if v1.closed() {
			t.Fatal("the old value closed while a lease holds it")
		}
		leased.Release()
		if !v1.closed() || v2.closed() {
			t.Errorf("after the last release of the old value: old closed %v, new closed %v; want true, false", v1.closed(), v2.closed())
		}
		if s := c.Stats(); s.Refreshes != 1 || s.RefreshErrors != 0 || s.Entries != 1 {
			t.Errorf("Stats: Refreshes %d, RefreshErrors %d, Entries %d; want 1, 0, 1", s.Refreshes, s.RefreshErrors, s.Entries)
		}
	})
}

func TestFailedRefreshKeepsTheOldValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		v1 := mustGet(t, c, "k")
		g.fail.Store(true)
		if err := c.Refresh(context.Background(), "k"); !errors.Is(err, errClose) {
			t.Fatalf("Refresh with a failing build = %v; want its error", err)
		}
		if got := mustGet(t, c, "k"); got != v1 || v1.closed() {
			t.Errorf("after a failed refresh Get returned #%d (closed %v); want the old value, open", got.gen, v1.closed())
		}
		if s := c.Stats(); s.Refreshes != 1 || s.RefreshErrors != 1 {
			t.Errorf("Stats: Refreshes %d, RefreshErrors %d; want 1, 1", s.Refreshes, s.RefreshErrors)
		}
	})
}

func TestRefreshOfAbsentKeyBuildsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		if err := c.Refresh(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
		if v, ok := c.Peek("k"); !ok || v.gen != 1 {
			t.Errorf("Peek after Refresh of an absent key = %v, %v; want build #1", v, ok)
		}
	})
}

// A pending build started before Refresh was called is not its answer: it
// may have used the old credentials.
func TestRefreshOfPendingKeyBuildsAfterIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		g.hold()
		go c.Get(context.Background(), "k")
		synctest.Wait() // build #1 waits at the gate
		done := make(chan error, 1)
		go func() { done <- c.Refresh(context.Background(), "k") }()
		synctest.Wait()
		g.open()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if v := mustGet(t, c, "k"); v.gen != 2 {
			t.Errorf("after Refresh of a pending key Get returned build #%d; want #2, which started after the call", v.gen)
		}
	})
}

func TestConcurrentRefreshesShareOneBuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		mustGet(t, c, "k")
		g.hold()
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Refresh(context.Background(), "k"); err != nil {
					t.Error(err)
				}
			}()
		}
		synctest.Wait()
		g.open()
		wg.Wait()
		if n := g.count("k"); n > 3 {
			t.Errorf("5 concurrent Refresh calls made %d builds; want them to share (at most 2 after the first)", n)
		}
		if s := c.Stats(); s.Refreshes > 2 {
			t.Errorf("Stats.Refreshes = %d for 5 concurrent calls", s.Refreshes)
		}
	})
}

func TestRefreshContextEndsRefreshGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		mustGet(t, c, "k")
		g.hold()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Refresh(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Refresh with an ending ctx = %v; want DeadlineExceeded", err)
		}
		g.open()
		synctest.Wait()
		if v := mustGet(t, c, "k"); v.gen != 2 {
			t.Errorf("Get after the refresh went on = #%d; want #2", v.gen)
		}
	})
}

// Invalidate during a refresh: the entry leaves, the refresh's value is
// never cached and is closed; Refresh then builds the key like Get.
func TestInvalidateDuringRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, nil)
		mustGet(t, c, "k")
		g.hold()
		done := make(chan error, 1)
		go func() { done <- c.Refresh(context.Background(), "k") }()
		synctest.Wait()
		c.Invalidate("k")
		g.open()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// The refresh's goroutine closes the dropped value after it has
		// released the refresh's waiters: let it finish.
		synctest.Wait()
		g.mu.Lock()
		dropped := g.all[1]
		g.mu.Unlock()
		if !dropped.closed() {
			t.Errorf("the value of a refresh whose entry was invalidated was not closed")
		}
		if v := mustGet(t, c, "k"); v.gen != 3 {
			t.Errorf("Get after Invalidate during Refresh = #%d; want #3", v.gen)
		}
	})
}

func TestRefreshAfterServesOldValueAndRefreshesInBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, &Options[string, *resource]{RefreshAfter: time.Minute, MaxLifetime: time.Hour})
		v1 := mustGet(t, c, "k")
		mustGet(t, c, "idle")
		time.Sleep(2 * time.Minute)
		g.hold()
		if got := mustGet(t, c, "k"); got != v1 {
			t.Fatalf("a use past RefreshAfter returned #%d; want the current value at once", got.gen)
		}
		synctest.Wait()
		if got := mustGet(t, c, "k"); got != v1 {
			t.Fatal("the value changed before the refresh finished")
		}
		g.open()
		synctest.Wait()
		if got := mustGet(t, c, "k"); got.gen != 2 {
			t.Errorf("after the background refresh Get = #%d; want #2", got.gen)
		}
		if n := g.count("idle"); n != 1 {
			t.Errorf("an idle entry was refreshed (%d builds); want 1: idle entries are not refreshed", n)
		}
		if s := c.Stats(); s.Misses != 2 {
			t.Errorf("Stats.Misses = %d; want 2: no caller waited for the refresh", s.Misses)
		}

		// A failed automatic refresh: the old value stays, and the next
		// attempt waits for the backoff (RefreshAfter/8).
		g.fail.Store(true)
		time.Sleep(2 * time.Minute)
		mustGet(t, c, "k")
		synctest.Wait()
		mustGet(t, c, "k") // within the backoff: no new attempt
		synctest.Wait()
		if s := c.Stats(); s.RefreshErrors != 1 {
			t.Fatalf("RefreshErrors = %d right after a failure; want 1 (no retry within the backoff)", s.RefreshErrors)
		}
		time.Sleep(8 * time.Second) // past RefreshAfter/8
		mustGet(t, c, "k")
		synctest.Wait()
		if s := c.Stats(); s.RefreshErrors != 2 {
			t.Errorf("RefreshErrors = %d after the backoff; want 2 (retried)", s.RefreshErrors)
		}
		if got := mustGet(t, c, "k"); got.gen != 2 {
			t.Errorf("after failed refreshes Get = #%d; want the old #2", got.gen)
		}
	})
}

// The jitter is drawn once per build: the lifetimes of 1,000 entries built
// in the same tick spread over the jitter window, and do not change with
// use.
func TestLifetimeJitterSpreadsEntriesBuiltTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		lifetime, jitter := 10*time.Minute, 2*time.Minute
		c := newTestCache(t, func(_ context.Context, key string) (int, error) { return 0, nil }, &Options[string, int]{
			MaxLifetime: lifetime, LifetimeJitter: jitter,
		})
		deadline := func(key string) int64 {
			e, ok := c.m.Load(key)
			if !ok {
				t.Fatalf("%s not cached", key)
			}
			return e.life.deadline
		}
		first := map[string]int64{} // lifetimes, from the build
		at := map[string]int64{}    // deadlines
		lo, hi := int64(1<<62), int64(0)
		for i := range n {
			key := strconv.Itoa(i)
			mustGet(t, c, key)
			e, _ := c.m.Load(key)
			d := e.life.deadline - e.used.Load() // just built: its use stamp is the build's end
			first[key], at[key] = d, e.life.deadline
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < int64(lifetime-jitter) || hi > int64(lifetime) {
			t.Errorf("lifetimes within [%v, %v]; want within [%v, %v]", time.Duration(lo), time.Duration(hi), lifetime-jitter, lifetime)
		}
		if spread := time.Duration(hi - lo); spread < jitter*9/10 {
			t.Errorf("lifetimes of %d entries built in one tick spread over %v; want most of the %v jitter", n, spread, jitter)
		}
		// Buckets of a tenth of the window: each should hold some.
		var buckets [10]int
		for _, d := range first {
			buckets[min(int((int64(lifetime)-d)*10/int64(jitter)), 9)]++
		}
		for i, b := range buckets {
			if b < n/40 {
				t.Errorf("jitter bucket %d holds %d of %d entries; want a spread (%v)", i, b, n, buckets)
			}
		}
		time.Sleep(time.Minute)
		for key, d := range at {
			mustGet(t, c, key)
			if got := deadline(key); got != d {
				t.Fatalf("entry %s: deadline moved after a use (%v, was %v): jitter must be drawn once", key, time.Duration(got), time.Duration(d))
			}
		}
		time.Sleep(lifetime - jitter - time.Minute - time.Second)
		synctest.Wait()
		if got := c.Len(); got != n {
			t.Errorf("Len = %d before the jitter window; want %d", got, n)
		}
		time.Sleep(jitter / 2)
		synctest.Wait()
		if got := c.Len(); got == 0 || got == n {
			t.Errorf("Len = %d in the middle of the jitter window; want some entries expired, not all", got)
		}
	})
}

func TestRefreshOptionsValidated(t *testing.T) {
	build := func(context.Context, string) (int, error) { return 0, nil }
	for _, o := range []Options[string, int]{
		{RefreshAfter: time.Hour, MaxLifetime: time.Hour},
		{RefreshAfter: 2 * time.Hour, MaxLifetime: time.Hour},
		{LifetimeJitter: time.Second},
		{LifetimeJitter: time.Hour, MaxLifetime: time.Hour},
		{LifetimeJitter: time.Minute, MaxLifetime: time.Hour, RefreshAfter: time.Minute},
		{RefreshAfter: -1},
		{LifetimeJitter: -1, MaxLifetime: time.Hour},
	} {
		if _, err := New(build, &o); err == nil {
			t.Errorf("New(RefreshAfter %v, MaxLifetime %v, LifetimeJitter %v) succeeded; want an error", o.RefreshAfter, o.MaxLifetime, o.LifetimeJitter)
		}
	}
	c, err := New(build, &Options[string, int]{RefreshAfter: time.Minute, MaxLifetime: time.Hour, LifetimeJitter: 59 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A refresh build takes a build slot like any build.
func TestRefreshTakesABuildSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, peak atomic.Int32
		hold := make(chan struct{})
		c := newTestCache(t, func(_ context.Context, key string) (string, error) {
			n := running.Add(1)
			defer running.Add(-1)
			peak.Store(max(peak.Load(), n))
			if key == "slow" {
				<-hold
			}
			return key, nil
		}, &Options[string, string]{MaxConcurrentBuilds: 1})
		mustGet(t, c, "k")
		go c.Get(context.Background(), "slow")
		synctest.Wait()
		done := make(chan error, 1)
		go func() { done <- c.Refresh(context.Background(), "k") }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Refresh returned %v while the only slot was held", err)
		default:
		}
		close(hold)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if p := peak.Load(); p > 1 {
			t.Errorf("%d builds ran at once; want at most 1", p)
		}
	})
}

// The backoff after failed refreshes saturates at RefreshAfter even at its
// type's limit: it never wraps into the past and starts a refresh at once.
func TestRefreshBackoffAtTheLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g gatedBuilder
		c := newTestCache(t, g.build, &Options[string, *resource]{RefreshAfter: math.MaxInt64})
		mustGet(t, c, "k")
		g.fail.Store(true)
		for range 5 {
			if err := c.Refresh(context.Background(), "k"); !errors.Is(err, errClose) {
				t.Fatalf("Refresh = %v; want the build error", err)
			}
		}
		time.Sleep(time.Hour)
		mustGet(t, c, "k")
		synctest.Wait()
		if s := c.Stats(); s.Refreshes != 5 {
			t.Errorf("Refreshes = %d; want 5: a use started an automatic refresh after failures with RefreshAfter at its limit", s.Refreshes)
		}
	})
}

// The sentences of the refresh, stats and options docs that say exactly
// when and where: each is checked here.
func TestRefreshAndStatsSentences(t *testing.T) {
	t.Run("one jitter draw for MaxLifetime and RefreshAfter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var b builder
			c := newTestCache(t, b.build, &Options[string, *resource]{
				MaxLifetime: time.Hour, RefreshAfter: 30 * time.Minute, LifetimeJitter: 10 * time.Minute,
			})
			for i := range 50 {
				mustGet(t, c, fmt.Sprint(i))
				e, _ := c.m.Load(fmt.Sprint(i))
				// Both are the build's end less the same jitter.
				fromLife := e.life.deadline - c.lifetime
				fromRefresh := e.refresh.Load().at.Load() - c.refreshAfter
				if fromLife != fromRefresh {
					t.Fatalf("entry %d: lifetime and refresh age shortened by amounts %v apart; want one draw", i, time.Duration(fromLife-fromRefresh))
				}
			}
		})
	})
	t.Run("Building counts a build that lent its slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			gate := make(chan struct{})
			var c *Cache[string, string]
			c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
				if key == "a" {
					return c.Get(ctx, "b")
				}
				<-gate
				return "b", nil
			}, &Options[string, string]{MaxConcurrentBuilds: 1})
			go c.Get(context.Background(), "a")
			synctest.Wait()
			if s := c.Stats(); s.Building != 2 || s.Pending != 2 {
				t.Errorf("a waits for b: Building %d, Pending %d; want 2, 2", s.Building, s.Pending)
			}
			close(gate)
		})
	})
	t.Run("a timed-out refresh counts at its timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var n atomic.Int32
			c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
				if n.Add(1) > 1 {
					time.Sleep(5 * time.Second) // ignores its context
				}
				return "v", nil
			}, &Options[string, string]{BuildTimeout: time.Second})
			mustGet(t, c, "k")
			start := time.Now()
			err := c.Refresh(context.Background(), "k")
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
				t.Fatalf("Refresh = %v after %v; want the timeout after 1s", err, time.Since(start))
			}
			if s := c.Stats(); s.Refreshes != 1 || s.RefreshErrors != 1 || s.Building != 1 {
				t.Errorf("at the timeout: Refreshes %d, RefreshErrors %d, Building %d; want 1, 1, 1", s.Refreshes, s.RefreshErrors, s.Building)
			}
			time.Sleep(5 * time.Second)
			synctest.Wait()
			if s := c.Stats(); s.Refreshes != 1 || s.Building != 0 {
				t.Errorf("after the build returned: Refreshes %d, Building %d; want 1, 0", s.Refreshes, s.Building)
			}
		})
	})
	t.Run("the backoff counts from the end of the failed refresh", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var n atomic.Int32
			c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
				if n.Add(1) == 1 {
					return "v", nil
				}
				time.Sleep(3 * time.Second) // the failed refresh takes 3s
				return "", errors.New("refresh fails")
			}, &Options[string, string]{RefreshAfter: 8 * time.Second, ClockResolution: 10 * time.Millisecond})
			mustGet(t, c, "k")
			// Two ticks past RefreshAfter: the hit path reads the coarse
			// clock, which the janitor may not have moved yet at the very
			// instant of the deadline.
			time.Sleep(8*time.Second + 20*time.Millisecond)
			mustGet(t, c, "k") // starts the refresh
			time.Sleep(3 * time.Second)
			synctest.Wait() // it failed, 3s after it started
			if s := c.Stats(); s.RefreshErrors != 1 {
				t.Fatalf("RefreshErrors %d; want 1", s.RefreshErrors)
			}
			// Backoff RefreshAfter/8 = 1s from the failure's end: a use
			// 0.9s after it starts nothing, one 1.1s after it does.
			time.Sleep(900 * time.Millisecond)
			mustGet(t, c, "k")
			synctest.Wait()
			if got := n.Load(); got != 2 {
				t.Fatalf("a use 0.9s after the failure started refresh #%d; want none", got-1)
			}
			time.Sleep(200 * time.Millisecond)
			mustGet(t, c, "k")
			synctest.Wait()
			if got := n.Load(); got != 3 {
				t.Errorf("a use 1.1s after the failure: %d builds; want 3", got)
			}
		})
	})
	t.Run("a Refresh arriving while a rebuild runs starts the next one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var n atomic.Int32
			gate := make(chan struct{})
			c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
				if n.Add(1) == 2 {
					<-gate
				}
				return "v", nil
			}, nil)
			mustGet(t, c, "k")
			errs := make(chan error, 2)
			go func() { errs <- c.Refresh(context.Background(), "k") }()
			synctest.Wait() // the first rebuild runs
			go func() { errs <- c.Refresh(context.Background(), "k") }()
			synctest.Wait()
			close(gate)
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if got := n.Load(); got != 3 {
				t.Errorf("%d builds; want 3: the late Refresh starts its own rebuild after the first", got)
			}
		})
	})
	t.Run("Policy values other than LRU and TinyLFU are refused", func(t *testing.T) {
		_, err := New(func(context.Context, string) (int, error) { return 0, nil }, &Options[string, int]{Policy: 7})
		if err == nil || !strings.Contains(err.Error(), "Policy") {
			t.Errorf("New with Policy(7) = %v; want an error naming Policy", err)
		}
	})
}
