package rescache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// resource is a value that knows whether it was closed, and how often.
type resource struct {
	key    string
	gen    int
	closes atomic.Int32
}

func (r *resource) Close() error {
	r.closes.Add(1)
	return nil
}

func (r *resource) closed() bool { return r.closes.Load() > 0 }

// builder builds *resource values and counts builds per key.
type builder struct {
	mu     sync.Mutex
	builds map[string]int
	all    []*resource
}

func (b *builder) build(_ context.Context, key string) (*resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.builds == nil {
		b.builds = map[string]int{}
	}
	b.builds[key]++
	r := &resource{key: key, gen: b.builds[key]}
	b.all = append(b.all, r)
	return r, nil
}

func (b *builder) count(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builds[key]
}

// checkAllClosedOnce fails unless every value built was closed exactly once.
func (b *builder) checkAllClosedOnce(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.all {
		if n := r.closes.Load(); n != 1 {
			t.Errorf("value %s#%d closed %d times; want 1", r.key, r.gen, n)
		}
	}
}

// newTestCache returns a cache that is shut down when the test ends.
func newTestCache[V any](t *testing.T, build func(context.Context, string) (V, error), opts *Options[string, V]) *Cache[string, V] {
	t.Helper()
	c, err := New(build, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil && !errors.Is(err, errClose) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

var errClose = errors.New("close failed on purpose")

func mustGet[V any](t *testing.T, c *Cache[string, V], key string) V {
	t.Helper()
	v, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

// Semantics 1: one build per key, all callers share its result; builds of
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

// Semantics 2: the build's context.
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

func TestCloseCancelsBuildAndLaterCallersDoNotJoinIt(t *testing.T) {
	started := make(chan struct{})
	c, err := New(func(ctx context.Context, key string) (string, error) {
		close(started)
		<-ctx.Done()
		return "", ctx.Err()
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		_, err := c.Get(context.Background(), "k")
		errc <- err
	}()
	<-started
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter of a build cancelled by Close got %v; want ErrClosed", err)
	}
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

// Semantics 3: errors and panics.
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

func TestErrorTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var builds atomic.Int32
		boom := errors.New("tenant unknown")
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			builds.Add(1)
			return "", boom
		}, &Options[string, string]{ErrorTTL: time.Minute})
		for range 5 {
			if _, err := c.Get(context.Background(), "k"); !errors.Is(err, boom) {
				t.Fatalf("Get = %v; want boom", err)
			}
		}
		if n := builds.Load(); n != 1 {
			t.Fatalf("builds within ErrorTTL = %d; want 1", n)
		}
		if s := c.Stats(); s.ErrorHits != 4 {
			t.Errorf("ErrorHits = %d; want 4", s.ErrorHits)
		}
		time.Sleep(time.Minute)
		c.Get(context.Background(), "k")
		if n := builds.Load(); n != 2 {
			t.Fatalf("builds after ErrorTTL = %d; want 2", n)
		}
		// Invalidate forgets a remembered error.
		if !c.Invalidate("k") {
			t.Error("Invalidate of a remembered error = false")
		}
		c.Get(context.Background(), "k")
		if n := builds.Load(); n != 3 {
			t.Fatalf("builds after Invalidate = %d; want 3", n)
		}
	})
}

func TestErrorTTLDoesNotRememberPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			if builds.Add(1) == 1 {
				panic("bug")
			}
			return "ok", nil
		}, &Options[string, string]{ErrorTTL: time.Minute})
		var pe *PanicError
		if _, err := c.Get(context.Background(), "k"); !errors.As(err, &pe) {
			t.Fatalf("Get = %v; want a *PanicError", err)
		}
		if v := mustGet(t, c, "k"); v != "ok" {
			t.Fatalf("Get after a panic = %q; want a new build (a panic is not remembered)", v)
		}
	})
}

func TestErrorTTLMemoryIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, func(ctx context.Context, key string) (string, error) {
			return "", errors.New("no such tenant")
		}, &Options[string, string]{ErrorTTL: time.Hour, MaxErrorEntries: 10})
		for i := range 1000 {
			c.Get(context.Background(), fmt.Sprint(i))
		}
		if n := c.m.Size(); n != 10 {
			t.Fatalf("map holds %d entries after 1000 failed keys; want 10 (MaxErrorEntries)", n)
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

// Semantics 4: leases.
func TestLeaseKeepsValueOpenAcrossInvalidate(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, nil)
	v, release, err := c.Acquire(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Invalidate("k") {
		t.Fatal("Invalidate = false")
	}
	if v.closed() {
		t.Fatal("value closed while leased")
	}
	if s := c.Stats(); s.Leased != 1 || s.Entries != 0 {
		t.Errorf("Stats = %+v; want 1 lease, 0 entries", s)
	}
	// The next call builds a fresh value at once.
	if v2 := mustGet(t, c, "k"); v2 == v {
		t.Fatal("Get after Invalidate returned the invalidated value")
	}
	release()
	if !v.closed() {
		t.Fatal("value not closed at its last release")
	}
	release() // idempotent
	if n := v.closes.Load(); n != 1 {
		t.Fatalf("closes = %d; want 1", n)
	}
	if s := c.Stats(); s.Leased != 0 {
		t.Errorf("Leased = %d after release; want 0", s.Leased)
	}
}

func TestLeaseKeepsValueOpenAcrossEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 1})
		v, release, err := c.Acquire(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "b") // evicts a
		if _, ok := c.Peek("a"); ok {
			t.Fatal("a still cached after eviction")
		}
		synctest.Wait() // the eviction's hooks run on the hook goroutine
		if v.closed() {
			t.Fatal("leased value closed by eviction")
		}
		v2, release2, _ := c.Acquire(context.Background(), "a")
		defer release2()
		if v2 == v {
			t.Fatal("the evicted value was handed out again")
		}
		release()
		if !v.closed() {
			t.Fatal("evicted value not closed at release")
		}
	})
}

func TestManyLeasesCloseAtLastRelease(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, nil)
	var releases []func()
	var v *resource
	for range 5 {
		vv, r, err := c.Acquire(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		v = vv
		releases = append(releases, r)
	}
	c.Invalidate("k")
	for i, r := range releases {
		if v.closed() {
			t.Fatalf("closed after %d of 5 releases", i)
		}
		r()
		r()
	}
	if n := v.closes.Load(); n != 1 {
		t.Fatalf("closes = %d; want 1", n)
	}
}

func TestInvalidatePendingKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var b builder
		var builds atomic.Int32
		c := newTestCache(t, func(ctx context.Context, key string) (*resource, error) {
			if builds.Add(1) == 1 {
				<-release
			}
			return b.build(ctx, key)
		}, nil)

		type result struct {
			v       *resource
			release func()
		}
		waiters := make(chan result, 2)
		go func() {
			v, err := c.Get(context.Background(), "k")
			if err != nil {
				t.Error(err)
			}
			waiters <- result{v, nil}
		}()
		go func() {
			v, rel, err := c.Acquire(context.Background(), "k")
			if err != nil {
				t.Error(err)
			}
			waiters <- result{v, rel}
		}()
		synctest.Wait() // every goroutine of the test is now blocked
		if c.Stats().Misses < 2 {
			t.Fatalf("Stats() = %+v once every goroutine blocked", c.Stats())
		}
		if !c.Invalidate("k") {
			t.Fatal("Invalidate of a pending key = false")
		}
		// A new caller starts a fresh build.
		fresh := mustGet(t, c, "k")
		if fresh.gen != 1 {
			t.Fatalf("new caller got build %d; want the fresh build (1st to finish)", fresh.gen)
		}
		close(release)
		r1, r2 := <-waiters, <-waiters
		if r1.release == nil {
			r1, r2 = r2, r1 // r1 is Acquire's, r2 Get's
		}
		// The Acquire waiter gets the invalidated build's value, which
		// its lease keeps open; the Get waiter, which holds no lease,
		// gets the fresh build's value instead.
		old := r1.v
		if old == fresh || r2.v != fresh {
			t.Fatalf("Acquire waiter got build %d, Get waiter build %d; want the invalidated build (2) and the fresh one (1)", old.gen, r2.v.gen)
		}
		if v, _ := c.Peek("k"); v != fresh {
			t.Fatal("the invalidated build's value was cached")
		}
		if old.closed() {
			t.Fatal("old value closed while an Acquire waiter leases it")
		}
		r1.release()
		if n := old.closes.Load(); n != 1 {
			t.Fatalf("old value closed %d times; want 1 after release", n)
		}
	})
}

// Semantics 5: eviction.
func TestLRUEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var evicted []string
		var mu sync.Mutex
		c := newTestCache(t, b.build, &Options[string, *resource]{
			MaxEntries: 3,
			OnEvict: func(key string, _ *resource, reason EvictReason) {
				mu.Lock()
				defer mu.Unlock()
				evicted = append(evicted, key+":"+reason.String())
			},
		})
		// Recency has the resolution of the clock (10ms here): let a
		// tick pass between steps.
		step := func() { time.Sleep(10 * time.Millisecond) }
		for _, k := range []string{"a", "b", "c"} {
			mustGet(t, c, k)
			step()
		}
		mustGet(t, c, "a") // a is a use: b is now the least recently used
		step()
		c.Peek("b") // Peek is not a use
		step()
		if _, release, err := c.Acquire(context.Background(), "c"); err == nil { // Acquire is a use
			release()
		}
		step()
		mustGet(t, c, "d") // evicts b
		step()
		mustGet(t, c, "e") // evicts a: used before c's Acquire and d's build
		synctest.Wait()    // OnEvict of another key's entry runs on the hook goroutine
		mu.Lock()
		got := strings.Join(evicted, " ")
		mu.Unlock()
		if want := "b:capacity a:capacity"; got != want {
			t.Fatalf("evicted %q; want %q", got, want)
		}
		if c.Len() != 3 {
			t.Errorf("Len = %d; want 3", c.Len())
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: time.Minute})
		v := mustGet(t, c, "k")
		time.Sleep(50 * time.Second)
		if mustGet(t, c, "k") != v { // a use: the idle time starts again
			t.Fatal("rebuilt before the idle timeout")
		}
		time.Sleep(50 * time.Second)
		if _, ok := c.Peek("k"); !ok {
			t.Fatal("evicted 50s after its last use; IdleTimeout is 1m")
		}
		time.Sleep(10 * time.Second)
		if _, ok := c.Peek("k"); ok {
			t.Fatal("still cached a minute after its last use")
		}
		synctest.Wait()
		if !v.closed() {
			t.Fatal("idle value not closed")
		}
		if s := c.Stats(); s.EvictionsByReason[EvictIdle] != 1 || s.Entries != 0 {
			t.Errorf("Stats = %+v; want one idle eviction", s)
		}
	})
}

func TestLeasedEntryIsNotIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: time.Minute})
		v, release, _ := c.Acquire(context.Background(), "k")
		time.Sleep(5 * time.Minute)
		if got, _ := c.Peek("k"); got != v {
			t.Fatal("a leased entry was evicted as idle")
		}
		release() // the idle time runs from here
		time.Sleep(59 * time.Second)
		if _, ok := c.Peek("k"); !ok {
			t.Fatal("evicted less than IdleTimeout after its release")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !v.closed() {
			t.Fatal("not closed IdleTimeout after release")
		}
	})
}

func TestMaxLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{MaxLifetime: time.Hour})
		v := mustGet(t, c, "k")
		for range 59 {
			time.Sleep(time.Minute)
			if mustGet(t, c, "k") != v {
				t.Fatal("rebuilt before its lifetime, although used")
			}
		}
		time.Sleep(time.Minute)
		if mustGet(t, c, "k") == v {
			t.Fatal("served after MaxLifetime")
		}
		synctest.Wait() // the janitor's sweep may be the one closing it
		if !v.closed() {
			t.Fatal("expired value not closed")
		}
		if s := c.Stats(); s.EvictionsByReason[EvictLifetime] != 1 {
			t.Errorf("lifetime evictions = %d; want 1", s.EvictionsByReason[EvictLifetime])
		}
	})
}

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

func TestSweepCostDoesNotGrowWithLiveEntries(t *testing.T) {
	for _, n := range []int{100, 10000} {
		t.Run(fmt.Sprint(n, " entries"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var b builder
				c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: time.Hour, MaxLifetime: 2 * time.Hour})
				for i := range n {
					mustGet(t, c, fmt.Sprint(i))
				}
				// Nothing expired: a sweep looks at the head of the
				// lifetime list and the top of the LRU heap, whatever
				// the number of live entries.
				if looked := c.sweep(c.advance()); looked != 2 {
					t.Fatalf("a sweep over %d live entries, none expired, looked at %d; want 2", n, looked)
				}
				// Let the unused half go idle.
				time.Sleep(time.Hour / 2)
				for i := range n / 2 {
					mustGet(t, c, fmt.Sprint(i)) // used: not idle
				}
				time.Sleep(time.Hour / 2)
				synctest.Wait()
				if c.Len() != n/2 {
					t.Fatalf("Len = %d after the idle timeout of the unused half; want %d", c.Len(), n/2)
				}
				// The janitor evicted them; the next sweep is back to 2.
				if looked := c.sweep(c.advance()); looked != 2 {
					t.Fatalf("a sweep after the janitor evicted %d entries looked at %d; want 2", n/2, looked)
				}
			})
		})
	}
}

// Semantics 6: the Closer.
func TestEveryValueClosedExactlyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c, err := New(b.build, &Options[string, *resource]{MaxEntries: 2, IdleTimeout: time.Minute, MaxLifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "capacity")
		mustGet(t, c, "x")
		mustGet(t, c, "y") // evicts capacity
		time.Sleep(2 * time.Minute)
		mustGet(t, c, "invalidated")
		c.Invalidate("invalidated")
		mustGet(t, c, "closed")
		_, release, _ := c.Acquire(context.Background(), "leased-at-close")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		release()
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.checkAllClosedOnce(t)
		if s := c.Stats(); s.Closes != uint64(len(b.all)) {
			t.Errorf("Stats.Closes = %d; want %d", s.Closes, len(b.all))
		}
	})
}

func TestDefaultCloserUsesIOCloser(t *testing.T) {
	var b builder
	c, _ := New(func(ctx context.Context, key string) (io.Closer, error) { return b.build(ctx, key) }, nil)
	mustGet(t, c, "k")
	c.Close()
	b.checkAllClosedOnce(t)
}

func TestCloseErrorsAndPanicsAreContained(t *testing.T) {
	var closes atomic.Int32
	c, _ := New(func(ctx context.Context, key string) (string, error) { return key, nil }, &Options[string, string]{
		Close: func(key, _ string) error {
			closes.Add(1)
			switch key {
			case "fails":
				return errClose
			case "panics":
				panic("closer panic")
			}
			return nil
		},
		OnEvict: func(key, _ string, _ EvictReason) {
			if key == "evict-panics" {
				panic("OnEvict panic")
			}
		},
	})
	for _, k := range []string{"fails", "panics", "evict-panics"} {
		mustGet(t, c, k)
		c.Invalidate(k)
	}
	if s := c.Stats(); s.CloseErrors != 2 || s.Closes != 3 {
		t.Fatalf("Stats = %+v; want 3 closes, 2 close errors", s)
	}
	if v := mustGet(t, c, "still-works"); v != "still-works" {
		t.Fatal("cache broken after panics")
	}
	mustGet(t, c, "fails")
	err := c.Close()
	if !errors.Is(err, errClose) {
		t.Fatalf("Close = %v; want the close error", err)
	}
	if err2 := c.Close(); err2 != err {
		t.Errorf("second Close = %v; want the same %v", err2, err)
	}
}

// Semantics 7: Close and Shutdown.
func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c, _ := New(b.build, &Options[string, *resource]{IdleTimeout: time.Hour})
		idle := mustGet(t, c, "idle")
		leased, release, _ := c.Acquire(context.Background(), "leased")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if !idle.closed() {
			t.Error("idle value not closed by Close")
		}
		if leased.closed() {
			t.Error("leased value closed by Close")
		}
		if _, err := c.Get(context.Background(), "idle"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Close = %v; want ErrClosed", err)
		}
		if _, _, err := c.Acquire(context.Background(), "x"); !errors.Is(err, ErrClosed) {
			t.Errorf("Acquire after Close = %v; want ErrClosed", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := c.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a lease out = %v; want it to wait until ctx ends", err)
		}
		release()
		if err := c.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		b.checkAllClosedOnce(t)
	})
}

func TestShutdownWaitsForBuildsAndJanitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// goleak in TestMain fails the run if the janitor or a build goroutine
		// outlives Shutdown.
		started := make(chan struct{})
		finish := make(chan struct{})
		c, _ := New(func(ctx context.Context, key string) (string, error) {
			close(started)
			<-finish // ignores ctx for a while
			return "v", nil
		}, &Options[string, string]{IdleTimeout: time.Minute, MaxEntries: 5, HealthCheck: func(context.Context, string, string) error { return nil }})
		ctx, cancel := context.WithCancel(context.Background())
		go c.Get(ctx, "k")
		<-started
		cancel()
		done := make(chan error)
		go func() { done <- c.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown is blocked, if it waits as it should
		select {
		case <-done:
			t.Fatal("Shutdown returned while a build was running")
		default:
		}
		close(finish)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// Semantics 8: MaxConcurrentBuilds.
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

// Semantics 9: New validates and copies.
func TestNewValidates(t *testing.T) {
	build := func(context.Context, string) (int, error) { return 0, nil }
	if _, err := New[string, int](nil, nil); err == nil || !strings.Contains(err.Error(), "build function is nil") {
		t.Errorf("New(nil build) = %v", err)
	}
	for _, tc := range []struct {
		name string
		opts Options[string, int]
	}{
		{"MaxEntries", Options[string, int]{MaxEntries: -1}},
		{"IdleTimeout", Options[string, int]{IdleTimeout: -time.Second}},
		{"MaxLifetime", Options[string, int]{MaxLifetime: -1}},
		{"BuildTimeout", Options[string, int]{BuildTimeout: -1}},
		{"MaxConcurrentBuilds", Options[string, int]{MaxConcurrentBuilds: -2}},
		{"ErrorTTL", Options[string, int]{ErrorTTL: -1}},
		{"MaxErrorEntries", Options[string, int]{MaxErrorEntries: -1}},
		{"HealthCheckInterval", Options[string, int]{HealthCheckInterval: time.Second}},
	} {
		_, err := New(build, &tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("New with bad %s = %v; want an error naming it", tc.name, err)
		}
	}
	opts := Options[string, int]{MaxEntries: 5}
	c, err := New(build, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if opts.MaxEntries != 5 || opts.MaxErrorEntries != 0 || opts.ClockResolution != 0 || opts.KeyString != nil {
		t.Errorf("New modified the caller's Options: %+v", opts)
	}
}

// Performance: a hit allocates nothing.
func TestGetHitAllocatesNothing(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, &Options[string, *resource]{MaxEntries: 10, IdleTimeout: time.Minute})
	mustGet(t, c, "k")
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { c.Get(ctx, "k") }); n != 0 {
		t.Fatalf("Get of a found key allocates %v times; want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { c.Peek("k") }); n != 0 {
		t.Fatalf("Peek allocates %v times; want 0", n)
	}
}

func TestHealthCheckEvictsUnhealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var healthy atomic.Bool
		healthy.Store(true)
		c := newTestCache(t, b.build, &Options[string, *resource]{
			HealthCheck: func(ctx context.Context, key string, v *resource) error {
				if v.closed() {
					return errors.New("checked a closed value")
				}
				if !healthy.Load() {
					return errors.New("server gone")
				}
				return nil
			},
			HealthCheckInterval: 10 * time.Second,
		})
		v := mustGet(t, c, "k")
		time.Sleep(35 * time.Second)
		if s := c.Stats(); s.HealthChecks == 0 || s.HealthCheckErrors != 0 {
			t.Fatalf("Stats = %+v; want passing checks", s)
		}
		healthy.Store(false)
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if _, ok := c.Peek("k"); ok {
			t.Fatal("unhealthy entry still cached")
		}
		if !v.closed() {
			t.Fatal("unhealthy value not closed")
		}
		if s := c.Stats(); s.EvictionsByReason[EvictUnhealthy] != 1 {
			t.Errorf("unhealthy evictions = %d; want 1", s.EvictionsByReason[EvictUnhealthy])
		}
		healthy.Store(true)
		if mustGet(t, c, "k") == v {
			t.Fatal("the unhealthy value was served again")
		}
	})
}

func TestConcurrentCloseReturnsTheFirstCloseError(t *testing.T) {
	// Not in a synctest bubble: a Close waiting for the first is blocked on
	// a mutex, which a bubble does not count as durably blocked.
	closing := make(chan struct{})
	proceed := make(chan struct{})
	c, _ := New(func(ctx context.Context, key string) (string, error) { return key, nil }, &Options[string, string]{
		Close: func(string, string) error {
			close(closing)
			<-proceed
			return errClose
		},
	})
	mustGet(t, c, "k")
	first := make(chan error)
	go func() { first <- c.Close() }()
	<-closing // the first Close is closing the value: its result is not known yet
	second := make(chan error)
	go func() { second <- c.Close() }()
	close(proceed)
	if err := <-first; !errors.Is(err, errClose) {
		t.Errorf("first Close = %v; want the close error", err)
	}
	if err := <-second; !errors.Is(err, errClose) {
		t.Errorf("concurrent Close = %v; want the first Close's error", err)
	}
}
