package rescache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of the coarse clock: expiry on the hit path, the use stamp,
// durations at their limits, and expiry under CPU starvation.

func TestExpiredEntryIsNeverReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The clock is coarse (a tick is 1/64 of the timeout); at the
		// deadline the entry must be gone whether or not the janitor's
		// sweep ran first.
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: 64 * time.Second})
		for i := range 20 {
			key := fmt.Sprint(i)
			v := mustGet(t, c, key)
			time.Sleep(64*time.Second + time.Duration(i)*time.Millisecond)
			if got, ok := c.Peek(key); ok && got == v {
				t.Fatalf("Peek(%q) returned the value at its idle deadline", key)
			}
			if mustGet(t, c, key) == v {
				t.Fatalf("Get(%q) returned the value at its idle deadline", key)
			}
		}
	})
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
		if over := time.Duration(t0 - e.life.deadline); over >= 0 { // no jitter: the deadline is the build's end + lifetime
			late++
			worst = max(worst, over)
		}
	}
	t.Logf("%d values served under starvation, %d after their deadline (worst %v); %d builds", served, late, worst, gen.Load())
	if late > 0 {
		t.Errorf("%d of %d values served after their MaxLifetime (worst by %v); want none", late, served, worst)
	}
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
