package rescache

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests in this file check the behaviours decided for the corners of
// the state machine: whose goroutine runs a hook, nested builds, slots and
// health checks, gauges, the last-use stamp, and the bound on expiry under
// CPU starvation.

// A caller whose build evicts another key's entry does not run, nor wait
// for, that entry's hooks.
func TestCallerDoesNotRunOtherKeysHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var closed atomic.Int32
		c := newTestCache(t, func(_ context.Context, key string) (string, error) { return key, nil }, &Options[string, string]{
			MaxEntries: 1,
			Close: func(key, _ string) error {
				if key == "a" {
					<-gate // a *sql.DB Close waiting for its queries
				}
				closed.Add(1)
				return nil
			},
		})
		mustGet(t, c, "a")
		// context.Background and no BuildTimeout: b is built inline, on
		// this goroutine, and evicts a.
		if v := mustGet(t, c, "b"); v != "b" {
			t.Fatalf("Get(b) = %q", v)
		}
		synctest.Wait()
		if n := closed.Load(); n != 0 {
			t.Fatalf("a closed %d times while its Close is blocked", n)
		}
		close(gate)
		synctest.Wait()
		if n := closed.Load(); n != 1 {
			t.Errorf("a closed %d times once its Close could return; want 1", n)
		}
	})
}

// A build that calls Get for its own key, directly or through a chain of
// nested builds, gets ErrBuildCycle at once instead of waiting for itself.
func TestBuildWaitingForItselfFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c *Cache[string, string]
		c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
			switch key {
			case "self":
				return c.Get(ctx, "self")
			case "a":
				return c.Get(ctx, "b")
			case "b":
				return c.Get(ctx, "a")
			}
			return key, nil
		}, nil)
		for _, key := range []string{"self", "a"} {
			if _, err := c.Get(context.Background(), key); !errors.Is(err, ErrBuildCycle) {
				t.Errorf("Get(%q) of a build that waits for itself = %v; want ErrBuildCycle", key, err)
			}
		}
	})
}

// Health checks take a free build slot and never queue for one: while a
// build holds the only slot, no check runs.
func TestHealthChecksTakeFreeSlotsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		var checks atomic.Int32
		c := newTestCache(t, func(_ context.Context, key string) (string, error) {
			if key == "slow" {
				<-hold
			}
			return key, nil
		}, &Options[string, string]{
			MaxConcurrentBuilds: 1,
			HealthCheckInterval: time.Second,
			HealthCheck: func(context.Context, string, string) error {
				checks.Add(1)
				return nil
			},
		})
		mustGet(t, c, "k")
		go c.Get(context.Background(), "slow") // holds the slot
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n != 0 {
			t.Errorf("%d health checks ran while a build held the only slot; want 0", n)
		}
		close(hold)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n == 0 {
			t.Errorf("no health check ran once the slot was free")
		}
	})
}

// Pending and Building count a build until its function returns, even when
// BuildTimeout answered its waiters.
func TestPendingCountsBuildsUntilTheyReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		c := newTestCache(t, func(context.Context, string) (string, error) {
			<-hold // ignores its context
			return "late", nil
		}, &Options[string, string]{BuildTimeout: time.Second, MaxConcurrentBuilds: 1})
		if _, err := c.Get(context.Background(), "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get = %v; want the BuildTimeout error", err)
		}
		if s := c.Stats(); s.Pending != 1 || s.Building != 1 {
			t.Errorf("after BuildTimeout, with the build still running: Pending %d, Building %d; want 1, 1", s.Pending, s.Building)
		}
		close(hold)
		synctest.Wait()
		if s := c.Stats(); s.Pending != 0 || s.Building != 0 || s.Closes != 1 {
			t.Errorf("once the build returned: Pending %d, Building %d, Closes %d; want 0, 0, 1", s.Pending, s.Building, s.Closes)
		}
	})
}

func TestClockResolutionIsBounded(t *testing.T) {
	build := func(context.Context, string) (string, error) { return "", nil }
	for _, d := range []time.Duration{time.Nanosecond, time.Millisecond - 1, time.Minute + 1, 1<<63 - 1} {
		if _, err := New(build, &Options[string, string]{IdleTimeout: time.Hour, ClockResolution: d}); err == nil {
			t.Errorf("New with ClockResolution %v succeeded; want an error", d)
		}
	}
	for _, d := range []time.Duration{time.Millisecond, time.Minute} {
		c, err := New(build, &Options[string, string]{IdleTimeout: time.Hour, ClockResolution: d})
		if err != nil {
			t.Errorf("New with ClockResolution %v: %v", d, err)
			continue
		}
		c.Close()
	}
}

// The last-use stamp never moves back, whatever order racing uses store it.
func TestUseStampNeverMovesBack(t *testing.T) {
	e := newEntry[string, string]("k")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10000 {
				stampUse(e, int64(i*4+g))
			}
		}()
	}
	wg.Wait()
	if got := e.used.Load(); got != 39999 {
		t.Errorf("used = %d after uses up to 39999; want 39999", got)
	}
	stampUse(e, 5)
	if got := e.used.Load(); got != 39999 {
		t.Errorf("a use at an older clock moved the stamp back to %d", got)
	}
}

// A sweep does not look again and again at entries leased past their idle
// deadline: its cost stays small however many long leases are out, and an
// entry idles out after its last release.
func TestSweepCostWithLongLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, func(_ context.Context, key string) (int, error) { return 0, nil }, &Options[string, int]{
			IdleTimeout: time.Second,
		})
		var releases []func()
		for i := range 1000 {
			_, release, err := c.Acquire(context.Background(), string(rune('a'+i%26))+string(rune(i)))
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		time.Sleep(2 * time.Second) // every entry past its idle deadline, leased
		synctest.Wait()
		c.sweep(c.advance()) // parks the leased entries
		if looked := c.sweep(c.advance()); looked > 2 {
			t.Errorf("a sweep with 1,000 long leases out looked at %d entries; want at most 2", looked)
		}
		for _, r := range releases {
			r()
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := c.Len(); n != 0 {
			t.Errorf("Len = %d two idle timeouts after the releases; want 0", n)
		}
	})
}

// Under CPU starvation (8 busy goroutines per CPU) no value is served after
// its deadline: the coarse clock lags by the janitor's scheduling delay,
// and the hit path consults the system clock within max(4 ticks, 250ms) of
// a deadline. A value counts as served late when the clock before the call
// was already past the deadline of the entry it returned.
func TestExpiryBoundUnderCPUStarvation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for a second of real time")
	}
	const lifetime = 20 * time.Millisecond
	var gen atomic.Int64
	c := newTestCache(t, func(context.Context, string) (int64, error) { return gen.Add(1), nil }, &Options[string, int64]{
		MaxLifetime: lifetime,
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	var served, late int
	var worst time.Duration
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		t0 := int64(time.Since(c.epoch))
		v := mustGet(t, c, "k")
		e, ok := c.m.Load("k")
		if !ok || e.word.Load()&valuedBit == 0 || e.val != v {
			continue // replaced meanwhile
		}
		served++
		if over := time.Duration(t0 - e.deadline); over >= 0 { // no jitter: the deadline is the build's end + lifetime
			late++
			worst = max(worst, over)
		}
	}
	t.Logf("%d values served under starvation, %d after their deadline (worst %v); %d builds", served, late, worst, gen.Load())
	if late > 0 {
		t.Errorf("%d of %d values served after their MaxLifetime (worst by %v); want none", late, served, worst)
	}
}
