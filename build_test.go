package rescache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of builds: one build per key, its context and timeout, its errors,
// panics and Goexit, and a build waiting for itself.

// One build per key, all callers share its result; builds of
// different keys run concurrently; no lock is held while build runs.
func TestOneBuildPerKeySharedResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		release := make(chan struct{})
		c := newTestCache(t, func(ctx context.Context, key string) (*resource, error) {
			<-release
			return b.build(ctx, key)
		}, nil)

		const callers = 100
		var wg sync.WaitGroup
		got := make([]*resource, callers)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = mustGet(t, c, "a")
			}()
		}
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Misses < callers {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		close(release)
		wg.Wait()
		if n := b.count("a"); n != 1 {
			t.Fatalf("builds of a = %d; want 1", n)
		}
		for i, r := range got {
			if r != got[0] {
				t.Fatalf("caller %d got %p; want the shared value %p", i, r, got[0])
			}
		}
		s := c.Stats()
		if s.Builds != 1 || s.Misses != callers || s.Pending != 0 || s.Entries != 1 {
			t.Errorf("Stats = %+v; want 1 build, %d misses, 0 pending, 1 entry", s, callers)
		}
		mustGet(t, c, "a")
		if s := c.Stats(); s.Hits != 1 {
			t.Errorf("Hits = %d; want 1", s.Hits)
		}
	})
}

func TestBuildsOfDifferentKeysRunConcurrently(t *testing.T) {
	// Each build waits until the other has started: they can only finish
	// if they run at the same time.
	startedA, startedB := make(chan struct{}), make(chan struct{})
	c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
		mine, other := startedA, startedB
		if key == "b" {
			mine, other = startedB, startedA
		}
		close(mine)
		select {
		case <-other:
			return key, nil
		case <-time.After(10 * time.Second):
			return "", errors.New("builds did not overlap")
		}
	}, nil)
	var wg sync.WaitGroup
	for _, k := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v := mustGet(t, c, k); v != k {
				t.Errorf("Get(%q) = %q", k, v)
			}
		}()
	}
	wg.Wait()
}

func TestBuildMayUseCacheWithoutDeadlock(t *testing.T) {
	for _, limit := range []int{0, 1} {
		t.Run(fmt.Sprintf("MaxConcurrentBuilds=%d", limit), func(t *testing.T) {
			var c *Cache[string, string]
			c = newTestCache(t, func(ctx context.Context, key string) (string, error) {
				if rest, ok := strings.CutPrefix(key, "outer-"); ok {
					// A nested Get, and the other methods: none may
					// wait for a lock the build holds.
					inner, err := c.Get(ctx, "inner-"+rest)
					if err != nil {
						return "", err
					}
					c.Peek("x")
					c.Len()
					c.Stats()
					c.Invalidate("nothing")
					return "outer(" + inner + ")", nil
				}
				return key, nil
			}, &Options[string, string]{MaxEntries: 10, MaxConcurrentBuilds: limit})
			done := make(chan string)
			go func() { done <- mustGet(t, c, "outer-1") }()
			select {
			case v := <-done:
				if v != "outer(inner-1)" {
					t.Errorf("Get = %q", v)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nested Get deadlocked")
			}
		})
	}
}

// The build's context.
func TestBuildContextKeepsValuesNotCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type ctxKey struct{}
		buildErr := make(chan error, 1)
		proceed := make(chan struct{})
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if ctx.Value(ctxKey{}) != "tenant-id" {
				buildErr <- errors.New("value of the caller's context did not carry over")
			}
			<-proceed
			buildErr <- ctx.Err()
			return "v", nil
		}, nil)

		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "tenant-id"))
		errc := make(chan error)
		go func() {
			_, err := c.Get(ctx, "k")
			errc <- err
		}()
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Pending == 0 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with cancelled ctx = %v; want context.Canceled at once", err)
		}
		close(proceed)
		if err := <-buildErr; err != nil {
			t.Fatalf("build's ctx: %v; want it alive after the caller left", err)
		}
		// The build went on and its value is cached.
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Pending != 0 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		if v, ok := c.Peek("k"); !ok || v != "v" {
			t.Fatalf("Peek after abandoned build = %q, %v; want v, true", v, ok)
		}
		if n := c.Stats().Builds; n != 1 {
			t.Errorf("Builds = %d; want 1", n)
		}
	})
}

func TestBuildTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if builds.Add(1) == 1 {
				<-ctx.Done() // the first build hangs until its deadline
				return "", ctx.Err()
			}
			return "fresh", nil
		}, &Options[string, string]{BuildTimeout: 5 * time.Second})
		start := time.Now()
		_, err := c.Get(context.Background(), "k")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get = %v; want a DeadlineExceeded error", err)
		}
		if !strings.Contains(err.Error(), "timed out after 5s") {
			t.Errorf("error %q does not say what timed out", err)
		}
		if took := time.Since(start); took != 5*time.Second {
			t.Errorf("Get returned after %v; want 5s", took)
		}
		if v := mustGet(t, c, "k"); v != "fresh" {
			t.Errorf("Get after the timeout = %q; want a fresh build", v)
		}
	})
}

func TestBuildTimeoutAnswersWaitersEvenIfBuildIgnoresContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		unblock := make(chan struct{})
		closed := make(chan string, 1)
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			<-unblock // ignores ctx
			return "late", nil
		}, &Options[string, string]{
			BuildTimeout: time.Second,
			Close:        func(_ string, v string) error { closed <- v; return nil },
		})
		_, err := c.Get(context.Background(), "k")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get = %v; want DeadlineExceeded", err)
		}
		close(unblock)
		if v := <-closed; v != "late" {
			t.Fatalf("closed %q; want the late value closed", v)
		}
		if _, ok := c.Peek("k"); ok {
			t.Fatal("the late value was cached")
		}
	})
}

func TestCallerAfterCancelledBuildStartsNewOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (int32, error) {
			n := builds.Add(1)
			if n == 1 {
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return n, nil
		}, &Options[string, int32]{BuildTimeout: time.Second})
		if _, err := c.Get(context.Background(), "k"); err == nil {
			t.Fatal("first build should time out")
		}
		if v := mustGet(t, c, "k"); v != 2 {
			t.Fatalf("Get = %d; want the second build's value", v)
		}
	})
}

// Errors and panics.
func TestBuildErrorReachesAllWaitersAndIsNotCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var builds atomic.Int32
		release := make(chan struct{})
		boom := errors.New("boom")
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if builds.Add(1) == 1 {
				<-release
				return "", boom
			}
			return "ok", nil
		}, nil)
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Get(context.Background(), "k"); !errors.Is(err, boom) {
					t.Errorf("waiter got %v; want boom", err)
				}
			}()
		}
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Misses < 10 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		close(release)
		wg.Wait()
		if v := mustGet(t, c, "k"); v != "ok" {
			t.Fatalf("Get after error = %q; want a new build", v)
		}
		if s := c.Stats(); s.Builds != 2 || s.BuildErrors != 1 {
			t.Errorf("Stats = %+v; want 2 builds, 1 error", s)
		}
	})
}

func TestPanicBecomesPanicErrorForAllWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if builds.Add(1) == 1 {
				<-release
				panic("kaboom")
			}
			return "recovered", nil
		}, nil)
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Get(context.Background(), "k")
				var pe *PanicError
				if !errors.As(err, &pe) {
					t.Errorf("Get = %v; want a *PanicError", err)
					return
				}
				if pe.Value != "kaboom" || len(pe.Stack) == 0 || pe.Key != "k" {
					t.Errorf("PanicError = {Key:%v Value:%v, %d bytes of stack}", pe.Key, pe.Value, len(pe.Stack))
				}
			}()
		}
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Misses < 5 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		close(release)
		wg.Wait()
		if s := c.Stats(); s.Pending != 0 || s.Entries != 0 || s.BuildPanics != 1 {
			t.Fatalf("after panic: Stats = %+v; want nothing pending or cached, 1 panic", s)
		}
		if v := mustGet(t, c, "k"); v != "recovered" {
			t.Fatalf("Get after panic = %q", v)
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
