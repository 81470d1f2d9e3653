package rescache

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of closing values and of Close and Shutdown: every value closed
// once, Close errors and panics, hooks and whose goroutine runs them.

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

// The Closer.
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

// Close and Shutdown.
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
