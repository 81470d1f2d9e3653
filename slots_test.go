package rescache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of build slots (MaxConcurrentBuilds): the bound, waits that honour
// their context, lending a slot to a nested build, and ErrBuildCycle.

// No more than MaxConcurrentBuilds builds run at once.
func TestMaxConcurrentBuilds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inflight, peak atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			n := inflight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond) // keep builds overlapping
			inflight.Add(-1)
			return key, nil
		}, &Options[string, string]{MaxConcurrentBuilds: 3})
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mustGet(t, c, fmt.Sprint(i))
			}()
		}
		wg.Wait()
		if p := peak.Load(); p > 3 {
			t.Fatalf("peak concurrent builds = %d; want at most 3", p)
		}
	})
}

func TestWaitingForBuildSlotHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if key == "slow" {
				<-block
			}
			return key, nil
		}, &Options[string, string]{MaxConcurrentBuilds: 1})
		defer close(block)
		ctx, cancel := context.WithCancel(context.Background())
		go c.Get(ctx, "slow")
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Builds == 0 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel2()
		if _, err := c.Get(ctx2, "queued"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get waiting for a slot = %v; want DeadlineExceeded", err)
		}
		cancel()
	})
}

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
