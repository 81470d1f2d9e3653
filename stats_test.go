package rescache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of Stats: the gauges and counters under concurrent calls, Goexit and
// Invalidate.

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

// Processors created after New (GOMAXPROCS raised past the CPUs) have no
// per-processor slot: their hits and leases are counted in the shared
// overflow cell and their lease tokens are not reused, and the counts stay
// exact.
func TestCountsOfProcessorsAddedAfterNew(t *testing.T) {
	c := newTestCache(t, func(context.Context, string) (string, error) { return "v", nil }, nil)
	mustGet(t, c, "k")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(len(c.hot.cells) + 4))
	const workers, rounds = 16, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				l, err := c.Lease(context.Background(), "k")
				if err != nil {
					t.Error(err)
					return
				}
				runtime.Gosched()
				l.Release()
				l.Release() // idempotent
			}
		}()
	}
	wg.Wait()
	if s := c.Stats(); s.Leased != 0 || s.Hits != workers*rounds {
		t.Errorf("Stats: Leased %d, Hits %d; want 0, %d", s.Leased, s.Hits, workers*rounds)
	}
}
