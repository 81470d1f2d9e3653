package rescache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of remembered build errors (ErrorTTL, MaxErrorEntries).

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
