package rescache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests in this file each check one documented promise under the
// schedule that once broke it: nested builds under slot pressure, slow
// hooks beside expiry, Goexit, health checks beside idle expiry, durations
// at their limits and concurrent gauges.
//
// Where each row of README.md's Semantics table is checked (besides the
// model-based suites, property_test.go and fuzz_test.go, and the fault
// injection, fault_test.go, which cover every row at once):
//
//	states         TestOneBuildPerKeySharedResult, TestBuildErrorReachesAllWaitersAndIsNotCached
//	concurrency    TestBuildsOfDifferentKeysRunConcurrently, TestBuildMayUseCacheWithoutDeadlock,
//	               TestBuildWaitingForItselfFails, TestRefreshInBuildChainIsACycle, TestGetHitAllocatesNothing
//	hooks          TestCallerDoesNotRunOtherKeysHooks, TestOnEvictReturnsBeforeCloseStarts,
//	               TestSlowCloseDoesNotDelayExpiry
//	build context  TestBuildContextKeepsValuesNotCancellation, TestBuildTimeout,
//	               TestBuildTimeoutAnswersWaitersEvenIfBuildIgnoresContext,
//	               TestBuildQueuedForSlotIsFinishedWhenItsContextEnds
//	errors         TestErrorTTL, TestErrorTTLDoesNotRememberPanics, TestErrorTTLMemoryIsBounded,
//	               TestPanicBecomesPanicErrorForAllWaiters, TestGoexitInBuildAnswersWaiters,
//	               TestGoexitInInlineBuildEndsItsCaller
//	leases         TestLeaseKeepsValueOpenAcrossInvalidate, TestLeaseKeepsValueOpenAcrossEviction,
//	               TestManyLeasesCloseAtLastRelease, TestDiscardRemovesThisValueOnly,
//	               TestStaleLeaseCopyCannotReleaseAnother
//	invalidate     TestInvalidatePendingKey
//	eviction       TestLRUEviction, TestIdleTimeout, TestLeasedEntryIsNotIdle, TestMaxLifetime,
//	               TestExpiredEntryIsNeverReturned, TestHealthCheckEvictsUnhealthy,
//	               TestHealthCheckDoesNotHideIdleExpiry, TestDurationsAtTheirLimit,
//	               TestMaxEntriesBoundsOpenValuesUnderChurn, TestMaxEntriesBoundWithConcurrentBuildLimit,
//	               TestRoomWaitEndsAtClose (room_test.go)
//	closing        TestEveryValueClosedExactlyOnce, TestDefaultCloserUsesIOCloser,
//	               TestCloseErrorsAndPanicsAreContained, TestShutdownReturnsLateCloseErrors
//	Close          TestClose, TestShutdownWaitsForBuildsAndJanitor, TestConcurrentCloseReturnsTheFirstCloseError
//	bounds         TestMaxConcurrentBuilds, TestWaitingForBuildSlotHonoursContext,
//	               TestNestedGetOfQueuedBuildDoesNotDeadlock, TestSlotBoundHoldsWhenNestedWaitGivesUp,
//	               TestHealthChecksTakeFreeSlotsOnly, TestHostileKeys, TestSlotBoundHoldsAfterClose
//	time           TestExpiryBoundUnderCPUStarvation, TestSweepCostDoesNotGrowWithLiveEntries,
//	               TestSweepCostWithLongLeases, TestUseStampNeverMovesBack
//	refresh        TestRefreshReplacesWithoutMakingCallersWait, TestFailedRefreshKeepsTheOldValue,
//	               TestRefreshOfPendingKeyBuildsAfterIt, TestConcurrentRefreshesShareOneBuild,
//	               TestRefreshAfterServesOldValueAndRefreshesInBackground,
//	               TestLifetimeJitterSpreadsEntriesBuiltTogether, TestInvalidateDuringRefresh,
//	               TestRefreshTakesABuildSlot, TestRefreshAndStatsSentences
//	leak detection TestLeakThresholdReportsOnceWithStack, TestDroppedLeaseIsReleasedByTheRuntime,
//	               TestShutdownSaysWhichLeasesAreOut, TestShutdownReportNamesEachKeyOnce
//	stats          TestLeasedGaugeNeverNegative, TestPendingCountsBuildsUntilTheyReturn,
//	               TestBuildingGaugeAfterGoexit, TestMissCountedOnceWhenInvalidateDetachesTheBuild,
//	               TestStatsCountEachCallOnceUnderInvalidate
//	validation     TestNewValidates, TestClockResolutionIsBounded

// A build that holds the only slot and waits for a build queued for a slot
// must not deadlock: the waiting build lends its slot.
func TestNestedGetOfQueuedBuildDoesNotDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aStarted := make(chan struct{})
		letA := make(chan struct{})
		var c *Cache[string, string]
		c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if key == "A" {
				close(aStarted)
				<-letA
				b, err := c.Get(ctx, "B")
				return "A+" + b, err
			}
			return key, nil
		}, &Options[string, string]{MaxConcurrentBuilds: 1})

		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		var wg sync.WaitGroup
		var gotA, gotB string
		var errA, errB error
		wg.Add(2)
		go func() { defer wg.Done(); gotA, errA = c.Get(ctx, "A") }()
		<-aStarted
		go func() { defer wg.Done(); gotB, errB = c.Get(ctx, "B") }()
		synctest.Wait() // B is queued for the slot A holds
		close(letA)
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("Get(A) = %q, %v; Get(B) = %q, %v; want both without error (a deadlock ends with the hour's deadline)", gotA, errA, gotB, errB)
		}
		if gotA != "A+B" || gotB != "B" {
			t.Errorf("Get(A) = %q, Get(B) = %q; want A+B and B", gotA, gotB)
		}
	})
}

// runningCounter counts builds that run, not counting a build while it
// waits in a nested Get (it has lent its slot).
type runningCounter struct {
	n, peak atomic.Int32
}

func (r *runningCounter) enter() {
	n := r.n.Add(1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (r *runningCounter) exit() { r.n.Add(-1) }

// A parent build that gives up on a nested Get must not leave the nested
// build running without a slot of its own.
func TestSlotBoundHoldsWhenNestedWaitGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running runningCounter
		var c *Cache[string, string]
		c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
			running.enter()
			defer running.exit()
			if key[0] == 'P' {
				sub, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
				running.exit()
				_, err := c.Get(sub, "B"+key[1:])
				running.enter()
				cancel()
				time.Sleep(50 * time.Millisecond) // keeps working after giving up
				return key, err
			}
			time.Sleep(100 * time.Millisecond)
			return key, nil
		}, &Options[string, string]{MaxConcurrentBuilds: 1})

		var wg sync.WaitGroup
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Get(context.Background(), "P"+string(rune('0'+i)))
			}()
		}
		wg.Wait()
		synctest.Wait()
		if p := running.peak.Load(); p > 1 {
			t.Errorf("at most %d builds ran at once; want at most MaxConcurrentBuilds = 1", p)
		}
	})
}

// A slow Close must not stop the clock: an entry is never served after its
// deadline because a hook of another entry is slow.
func TestSlowCloseDoesNotDelayExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{
			MaxLifetime: 20 * time.Millisecond,
			Close: func(key string, r *resource) error {
				if key == "slow" {
					time.Sleep(time.Second)
				}
				return r.Close()
			},
		})
		mustGet(t, c, "slow")
		time.Sleep(15 * time.Millisecond)
		mustGet(t, c, "k") // lives until 35 ms
		time.Sleep(85 * time.Millisecond)
		// At 100 ms, "slow" expired at 20 ms and its Close runs for a
		// second; "k" expired at 35 ms.
		if _, ok := c.Peek("k"); ok {
			t.Errorf("Peek(k) found an entry 65 ms past its MaxLifetime")
		}
		if r := mustGet(t, c, "k"); r.gen != 2 {
			t.Errorf("Get(k) 65 ms past its MaxLifetime returned build #%d; want a new build (#2)", r.gen)
		}
	})
}

// OnEvict of a value returns before that value's Close starts, even when
// the last lease is released while OnEvict runs.
func TestOnEvictReturnsBeforeCloseStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var order []string
		gate := make(chan struct{})
		c := newTestCache(t, func(context.Context, string) (string, error) { return "v", nil }, &Options[string, string]{
			OnEvict: func(string, string, EvictReason) {
				<-gate
				mu.Lock()
				order = append(order, "OnEvict")
				mu.Unlock()
			},
			Close: func(string, string) error {
				mu.Lock()
				order = append(order, "Close")
				mu.Unlock()
				return nil
			},
		})
		_, release, err := c.Acquire(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		go c.Invalidate("k")
		synctest.Wait() // OnEvict runs and waits for gate
		release()
		synctest.Wait()
		close(gate)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(order) != 2 || order[0] != "OnEvict" || order[1] != "Close" {
			t.Errorf("hooks ran in order %v; want [OnEvict Close]", order)
		}
	})
}

// A build that calls runtime.Goexit answers its waiters, and the key is not
// left pending.
func TestGoexitInBuildAnswersWaiters(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		t.Run("BuildTimeout="+timeout.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				c := newTestCache(t, func(context.Context, string) (string, error) {
					if calls.Add(1) == 1 {
						runtime.Goexit()
					}
					return "v", nil
				}, &Options[string, string]{BuildTimeout: timeout})

				done := make(chan error, 1)
				go func() {
					defer func() { done <- errors.New("the caller's goroutine exited with the build") }()
					_, err := c.Get(context.Background(), "k")
					done <- err
				}()
				if err := <-done; err == nil {
					t.Errorf("Get of a build that called Goexit returned no error")
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
					t.Errorf("Get after a build called Goexit = %q, %v; want v (the key must not stay pending)", v, err)
				}
			})
		})
	}
}

// Shutdown returns the close error of a value closed after Close returned.
func TestShutdownReturnsLateCloseErrors(t *testing.T) {
	for round := range 1000 {
		c, err := New(func(context.Context, string) (string, error) { return "v", nil }, &Options[string, string]{
			Close: func(string, string) error { return errClose },
		})
		if err != nil {
			t.Fatal(err)
		}
		_, release, err := c.Acquire(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close with the only value leased = %v; want nil", err)
		}
		go release()
		if err := c.Shutdown(context.Background()); !errors.Is(err, errClose) {
			t.Fatalf("round %d: Shutdown = %v; want the late close error", round, err)
		}
	}
}

// A health check's internal hold does not keep an idle entry alive.
func TestHealthCheckDoesNotHideIdleExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{
			IdleTimeout:         time.Second,
			HealthCheckInterval: 400 * time.Millisecond,
			HealthCheck: func(ctx context.Context, _ string, _ *resource) error {
				time.Sleep(3 * time.Second)
				return nil
			},
			HealthCheckTimeout: 10 * time.Second,
		})
		mustGet(t, c, "k")
		time.Sleep(1500 * time.Millisecond) // a check runs since about 400-500 ms
		if _, ok := c.Peek("k"); ok {
			t.Errorf("Peek(k) found an entry unused for 1.5s with IdleTimeout 1s")
		}
		if r := mustGet(t, c, "k"); r.gen != 2 {
			t.Errorf("Get(k) after 1.5s idle returned build #%d; want a new build", r.gen)
		}
	})
}

// Every duration option works up to its type's limit.
func TestDurationsAtTheirLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		c := newTestCache(t, func(_ context.Context, key string) (string, error) {
			calls.Add(1)
			if key == "bad" {
				return "", errClose
			}
			return "v", nil
		}, &Options[string, string]{
			ErrorTTL:     math.MaxInt64,
			MaxLifetime:  math.MaxInt64,
			IdleTimeout:  math.MaxInt64,
			BuildTimeout: math.MaxInt64,
		})
		time.Sleep(time.Second) // the clock is past its epoch, where now+ttl can wrap
		for range 2 {
			if _, err := c.Get(context.Background(), "bad"); !errors.Is(err, errClose) {
				t.Fatalf("Get(bad) = %v; want the build error", err)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("ErrorTTL MaxInt64: the failing key was built %d times; want 1 (remembered)", n)
		}
		time.Sleep(time.Hour)
		mustGet(t, c, "ok")
		time.Sleep(24 * time.Hour)
		if v := mustGet(t, c, "ok"); v != "v" {
			t.Errorf("Get(ok) = %q", v)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("MaxLifetime and IdleTimeout MaxInt64: %d builds; want 2", n)
		}
	})
}

// Gauges are never negative, however the leases move between processors.
func TestLeasedGaugeNeverNegative(t *testing.T) {
	// More processors than cores: more cells to sum, and leases that move
	// between them.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(16))
	c := newTestCache(t, func(context.Context, string) (string, error) { return "v", nil }, nil)
	mustGet(t, c, "k")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, release, _ := c.Acquire(context.Background(), "k")
				runtime.Gosched() // likely released on another processor
				release()
			}
		}()
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if s := c.Stats(); s.Leased < 0 || s.Leased > 32 || s.Pending < 0 || s.Entries < 0 {
			t.Errorf("Stats: Leased %d, Pending %d, Entries %d; want within [0, 32], >= 0, >= 0", s.Leased, s.Pending, s.Entries)
			break
		}
	}
	close(stop)
	wg.Wait()
}

// A Refresh inside a build chain that would wait for the chain itself gets
// ErrBuildCycle at once: a's build calls Get(b), b's build calls
// Refresh(a), both while a's first build runs and while a's refresh runs.
func TestRefreshInBuildChainIsACycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c *Cache[string, string]
		var mu sync.Mutex
		var refreshErrs []error
		errB := errors.New("b fails, so that it is built again")
		c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if key == "a" {
				c.Get(ctx, "b") // its error is b's own
				return "a", nil
			}
			err := c.Refresh(ctx, "a")
			mu.Lock()
			refreshErrs = append(refreshErrs, err)
			mu.Unlock()
			return "", errB
		}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := c.Get(ctx, "a"); err != nil {
			t.Fatalf("Get(a): %v", err)
		}
		if err := c.Refresh(ctx, "a"); err != nil {
			t.Fatalf("Refresh(a): %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Get and Refresh of a took %v; a cycle must be refused at once", d)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(refreshErrs) != 2 {
			t.Fatalf("b's build ran %d times; want 2", len(refreshErrs))
		}
		for i, err := range refreshErrs {
			if !errors.Is(err, ErrBuildCycle) {
				t.Errorf("Refresh(a) in b's build #%d: %v; want ErrBuildCycle", i+1, err)
			}
		}
		if s := c.Stats(); s.Building != 0 || s.Pending != 0 {
			t.Errorf("Building %d, Pending %d at rest; want 0, 0", s.Building, s.Pending)
		}
	})
}

// After Close, a nested call that gave up waiting takes its slot back
// before it returns: MaxConcurrentBuilds holds while cancelled builds wind
// down.
func TestSlotBoundHoldsAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, peak atomic.Int32
		enter := func() {
			n := running.Add(1)
			if n > peak.Load() {
				peak.Store(n)
			}
		}
		bStarted := make(chan struct{})
		var c *Cache[string, string]
		c, err := New(func(ctx context.Context, key string) (string, error) {
			enter()
			defer running.Add(-1)
			if key == "a" {
				running.Add(-1) // the nested Get lends a's slot
				_, err := c.Get(ctx, "b")
				enter() // and takes one back before it returns
				return "a", err
			}
			close(bStarted)
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // b winds down, holding the slot
			return "", ctx.Err()
		}, &Options[string, string]{MaxConcurrentBuilds: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go c.Get(ctx, "a")
		<-bStarted
		c.Close()
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if p := peak.Load(); p > 1 {
			t.Errorf("%d build functions ran user code at once with MaxConcurrentBuilds 1", p)
		}
	})
}

// Stats.Building counts build functions running, however they end: a
// Goexit (through Get, Lease or Refresh) does not leave one behind.
func TestBuildingGaugeAfterGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			runtime.Goexit()
			return "", nil
		}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for i := range 10 {
			key := fmt.Sprint("k", i)
			var err error
			switch i % 3 {
			case 0:
				_, err = c.Get(ctx, key)
			case 1:
				_, err = c.Lease(ctx, key)
			case 2:
				err = c.Refresh(ctx, key)
			}
			if !errors.Is(err, ErrBuildGoexit) {
				t.Fatalf("call %d: %v; want ErrBuildGoexit", i, err)
			}
			synctest.Wait()
			if s := c.Stats(); s.Building != 0 || s.Pending != 0 || s.Leased != 0 {
				t.Fatalf("after %d Goexits: Building %d, Pending %d, Leased %d; want 0", i+1, s.Building, s.Pending, s.Leased)
			}
		}
	})
}

// A build that runs on its caller's goroutine (ctx without Done, no
// BuildTimeout) and calls runtime.Goexit takes that caller with it: its Get
// never returns. The other waiters get ErrBuildGoexit.
func TestGoexitInInlineBuildEndsItsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		started := make(chan struct{})
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			close(started)
			<-release
			runtime.Goexit()
			return "", nil
		}, nil)
		returned := make(chan bool, 1)
		go func() {
			ok := false
			defer func() { returned <- ok }()
			c.Get(context.Background(), "k") // runs the build inline
			ok = true
		}()
		<-started
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waiter := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, "k")
			waiter <- err
		}()
		synctest.Wait()
		close(release)
		if <-returned {
			t.Error("the caller whose goroutine ran the build returned from Get; Goexit must end it")
		}
		if err := <-waiter; !errors.Is(err, ErrBuildGoexit) {
			t.Errorf("other waiter: %v; want ErrBuildGoexit", err)
		}
	})
}

// A Get whose build Invalidate detached looks again and builds anew: it is
// still one call, counted once in Stats.Misses.
func TestMissCountedOnceWhenInvalidateDetachesTheBuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if builds.Add(1) == 1 {
				<-gate
			}
			return "v", nil
		}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, "k")
			done <- err
		}()
		synctest.Wait()
		c.Invalidate("k")
		close(gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		s := c.Stats()
		if s.Misses != 1 || s.Hits != 0 || s.Builds != 2 {
			t.Errorf("one Get over a detached build: Misses %d, Hits %d, Builds %d; want 1, 0, 2", s.Misses, s.Hits, s.Builds)
		}
	})
}

// With Invalidate racing Get and Acquire, every call is counted exactly
// once among Hits, Misses and ErrorHits.
func TestStatsCountEachCallOnceUnderInvalidate(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 20})
	var calls atomic.Uint64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				key := fmt.Sprint((i*7 + w) % 40)
				switch {
				case w == 0:
					c.Invalidate(key)
					continue
				case i%2 == 0:
					if _, err := c.Get(ctx, key); err != nil {
						t.Error(err)
						return
					}
				default:
					_, release, err := c.Acquire(ctx, key)
					if err != nil {
						t.Error(err)
						return
					}
					release()
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if got := s.Hits + s.Misses + s.ErrorHits; got != calls.Load() {
		t.Errorf("Hits %d + Misses %d + ErrorHits %d = %d; want the %d calls made", s.Hits, s.Misses, s.ErrorHits, got, calls.Load())
	}
}

// Shutdown's report counts leases and names each key once, even when a
// key's value was replaced while leased.
func TestShutdownReportNamesEachKeyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c, err := New(b.build, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		l1, _ := c.Lease(ctx, "k")
		if err := c.Refresh(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		l2, _ := c.Lease(ctx, "k")
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err = c.Shutdown(sctx)
		if err == nil || !strings.Contains(err.Error(), "2 leases still out, on k") || strings.Contains(err.Error(), "k, k") {
			t.Errorf("Shutdown: %v; want 2 leases on k, named once", err)
		}
		l1.Release()
		l2.Release()
		if err := c.Shutdown(ctx); err != nil {
			t.Fatal(err)
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
				fromLife := e.deadline - c.lifetime
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
