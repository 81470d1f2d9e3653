package rescache

import (
	"context"
	"errors"
	"math"
	"runtime"
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
//	               TestBuildWaitingForItselfFails, TestGetHitAllocatesNothing
//	hooks          TestCallerDoesNotRunOtherKeysHooks, TestOnEvictReturnsBeforeCloseStarts,
//	               TestSlowCloseDoesNotDelayExpiry
//	build context  TestBuildContextKeepsValuesNotCancellation, TestBuildTimeout,
//	               TestBuildTimeoutAnswersWaitersEvenIfBuildIgnoresContext,
//	               TestBuildQueuedForSlotIsFinishedWhenItsContextEnds
//	errors         TestErrorTTL, TestErrorTTLDoesNotRememberPanics, TestErrorTTLMemoryIsBounded,
//	               TestPanicBecomesPanicErrorForAllWaiters, TestGoexitInBuildAnswersWaiters
//	leases         TestLeaseKeepsValueOpenAcrossInvalidate, TestLeaseKeepsValueOpenAcrossEviction,
//	               TestManyLeasesCloseAtLastRelease
//	invalidate     TestInvalidatePendingKey
//	eviction       TestLRUEviction, TestIdleTimeout, TestLeasedEntryIsNotIdle, TestMaxLifetime,
//	               TestExpiredEntryIsNeverReturned, TestHealthCheckEvictsUnhealthy,
//	               TestHealthCheckDoesNotHideIdleExpiry, TestDurationsAtTheirLimit
//	closing        TestEveryValueClosedExactlyOnce, TestDefaultCloserUsesIOCloser,
//	               TestCloseErrorsAndPanicsAreContained, TestShutdownReturnsLateCloseErrors
//	Close          TestClose, TestShutdownWaitsForBuildsAndJanitor, TestConcurrentCloseReturnsTheFirstCloseError
//	bounds         TestMaxConcurrentBuilds, TestWaitingForBuildSlotHonoursContext,
//	               TestNestedGetOfQueuedBuildDoesNotDeadlock, TestSlotBoundHoldsWhenNestedWaitGivesUp,
//	               TestHealthChecksTakeFreeSlotsOnly, TestHostileKeys
//	time           TestExpiryBoundUnderCPUStarvation, TestSweepCostDoesNotGrowWithLiveEntries,
//	               TestSweepCostWithLongLeases, TestUseStampNeverMovesBack
//	stats          TestLeasedGaugeNeverNegative, TestPendingCountsBuildsUntilTheyReturn
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
