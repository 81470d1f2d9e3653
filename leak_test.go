package rescache

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of leak reporting: leases dropped without Release, and what
// Shutdown says about leases still out.

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

// A lease dropped without Release is released by the garbage collector, so
// its value closes, and it is counted and logged.
func TestDroppedLeaseIsReleasedByTheRuntime(t *testing.T) {
	var logs syncBuffer
	var b builder
	c := newTestCache(t, b.build, &Options[string, *resource]{
		LeakThreshold: time.Hour,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	v := func() *resource {
		l, err := c.Lease(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		return l.Value() // the lease itself is dropped
	}()
	c.Invalidate("k") // the value now closes at its last release
	deadline := time.Now().Add(10 * time.Second)
	for !v.closed() && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // bounded polling for the runtime's cleanup goroutine
	}
	if !v.closed() {
		t.Fatal("the value of a dropped lease was not closed after runtime.GC")
	}
	if s := c.Stats(); s.LeaseLeaks != 1 || s.Leased != 0 {
		t.Errorf("Stats: LeaseLeaks %d, Leased %d; want 1, 0", s.LeaseLeaks, s.Leased)
	}
	if out := logs.String(); !strings.Contains(out, "lease dropped without Release") || !strings.Contains(out, "TestDroppedLeaseIsReleasedByTheRuntime") {
		t.Errorf("no report of the dropped lease with where it was taken:\n%s", out)
	}
}

// Shutdown with a lease out names its key and, with LeakThreshold, where it
// was taken.
func TestShutdownSaysWhichLeasesAreOut(t *testing.T) {
	for _, threshold := range []time.Duration{0, time.Hour} {
		synctest.Test(t, func(t *testing.T) {
			c, err := New(func(context.Context, string) (string, error) { return "v", nil }, &Options[string, string]{
				LeakThreshold: threshold,
				KeyString:     func(k string) string { return "tenant-" + k },
			})
			if err != nil {
				t.Fatal(err)
			}
			l, _ := c.Lease(context.Background(), "a")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err = c.Shutdown(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown with a lease out = %v; want it to match DeadlineExceeded", err)
			}
			for _, want := range []string{"1 leases still out", "tenant-a"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Shutdown error %q lacks %q", err, want)
				}
			}
			if taken := strings.Contains(err.Error(), "TestShutdownSaysWhichLeasesAreOut"); taken != (threshold > 0) {
				t.Errorf("LeakThreshold %v: Shutdown error names where the lease was taken: %v; want %v\n%v", threshold, taken, threshold > 0, err)
			}
			l.Release()
			if err := c.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown after the release = %v", err)
			}
		})
	}
}
