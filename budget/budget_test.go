package budget_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/rescache/rescache/budget"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newLocal(t *testing.T, n int) *budget.Local {
	t.Helper()
	b, err := budget.NewLocal(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewLocalRejectsNoPlace(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := budget.NewLocal(n); err == nil {
			t.Errorf("NewLocal(%d) = nil error; want one", n)
		}
	}
}

// Waiters are served first come first served; a waiter whose context ends
// holds nothing and reports the context's error.
func TestLocalFIFOAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newLocal(t, 1)
		ctx := context.Background()
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		var order []int
		done := make(chan int, 3)
		for i := range 3 {
			go func() {
				if err := b.Acquire(ctx); err != nil {
					t.Error(err)
					return
				}
				done <- i
			}()
			synctest.Wait() // each queues before the next
		}
		if !b.Contended() {
			t.Error("Contended() = false with three waiters")
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := b.Acquire(cctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire with a full budget until the deadline = %v; want DeadlineExceeded", err)
		}
		for range 3 {
			b.Release()
			order = append(order, <-done)
		}
		b.Release()
		if order[0] != 0 || order[1] != 1 || order[2] != 2 {
			t.Errorf("served in order %v; want [0 1 2]", order)
		}
		st := b.Stats()
		if st.Held != 0 || st.Waiting != 0 || st.WaitCount != 4 || st.WaitDuration == 0 || st.Max != 1 {
			t.Errorf("Stats = %+v; want Held 0, Waiting 0, WaitCount 4, Max 1, some wait time", st)
		}
	})
}

// A waiter calls the reclaimers once when its wait starts, and the
// periodic ones every Every while it lasts; a removed reclaimer is no
// longer called.
func TestLocalReclaimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newLocal(t, 1)
		ctx := context.Background()
		var once, periodic atomic.Int64
		removeOnce := b.AddReclaimer(budget.Reclaimer{Reclaim: func() int { once.Add(1); return 0 }})
		removePeriodic := b.AddReclaimer(budget.Reclaimer{Reclaim: func() int { periodic.Add(1); return 0 }, Every: 10 * time.Millisecond})
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(55 * time.Millisecond)
			b.Release()
		}()
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if once.Load() != 1 {
			t.Errorf("the once reclaimer ran %d times; want 1", once.Load())
		}
		if n := periodic.Load(); n != 6 { // at the start, then at 10..50ms
			t.Errorf("the periodic reclaimer ran %d times; want 6", n)
		}
		removeOnce()
		removeOnce()
		removePeriodic()
		go func() {
			time.Sleep(time.Millisecond)
			b.Release()
		}()
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		b.Release()
		if once.Load() != 1 || periodic.Load() != 6 {
			t.Errorf("removed reclaimers ran again: %d, %d", once.Load(), periodic.Load())
		}
	})
}

// A reclaim that frees a place synchronously serves the waiter at once.
func TestLocalReclaimServesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newLocal(t, 1)
		ctx := context.Background()
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		b.AddReclaimer(budget.Reclaimer{Reclaim: func() int { b.Release(); return 1 }})
		start := time.Now()
		if err := b.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("waited %v; want 0", d)
		}
		b.Release()
	})
}
