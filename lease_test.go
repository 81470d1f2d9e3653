package rescache

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of leases: what a Lease holds, its zero value, stale copies,
// Discard, a lease held across Invalidate and eviction, and leak reports
// while a lease is out.

func TestLeaseOfFoundKeyAllocatesNothing(t *testing.T) {
	c := newTestCache(t, func(context.Context, string) (string, error) { return "v", nil }, &Options[string, string]{
		MaxEntries: 10, IdleTimeout: time.Minute,
	})
	mustGet(t, c, "k")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		l, err := c.Lease(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	})
	if allocs != 0 {
		t.Errorf("Lease+Release of a found key: %v allocations; want 0", allocs)
	}
}

func TestLeaseValueKeyAndZeroLease(t *testing.T) {
	c := newTestCache(t, func(_ context.Context, key string) (string, error) { return "v:" + key, nil }, nil)
	l, err := c.Lease(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if l.Key() != "k" || l.Value() != "v:k" {
		t.Errorf("Lease = (%q, %q); want (k, v:k)", l.Key(), l.Value())
	}
	l.Release()
	l.Release()
	var zero Lease[string, string]
	zero.Release() // nothing
	zero.Discard()
	if zero.Key() != "" || zero.Value() != "" {
		t.Errorf("zero Lease holds (%q, %q)", zero.Key(), zero.Value())
	}
	if s := c.Stats(); s.Leased != 0 {
		t.Errorf("Stats.Leased = %d after releases; want 0", s.Leased)
	}
}

// A stale copy of a released lease cannot release the lease of the next
// caller, even when that caller got the same internal state.
func TestStaleLeaseCopyCannotReleaseAnother(t *testing.T) {
	var b builder
	c := newTestCache(t, b.build, nil)
	ctx := context.Background()
	for range 1000 {
		l1, err := c.Lease(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		stale := l1
		l1.Release()
		l2, err := c.Lease(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if l2.t != l1.t {
			l2.Release()
			continue // not reused this time
		}
		stale.Release() // must not end l2
		if s := c.Stats(); s.Leased != 1 {
			t.Fatalf("a stale copy's Release ended the next caller's lease: Stats.Leased = %d; want 1", s.Leased)
		}
		if !c.Invalidate("k") {
			t.Fatal("Invalidate = false")
		}
		v := l2.Value()
		if v.closed() {
			t.Fatal("the value was closed under the next caller's lease")
		}
		l2.Release()
		if !v.closed() {
			t.Fatal("the value was not closed at the last release")
		}
		return
	}
	t.Skip("the lease's state was never reused in 1,000 tries")
}

func TestDiscardRemovesThisValueOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var mu sync.Mutex
		var reasons []EvictReason
		c := newTestCache(t, b.build, &Options[string, *resource]{
			OnEvict: func(_ string, _ *resource, r EvictReason) {
				mu.Lock()
				reasons = append(reasons, r)
				mu.Unlock()
			},
		})
		ctx := context.Background()

		// Discard of the current value: the entry leaves, the value
		// closes once its other holder releases.
		l1, _ := c.Lease(ctx, "k")
		l2, _ := c.Lease(ctx, "k")
		v1 := l1.Value()
		l1.Discard()
		if _, ok := c.Peek("k"); ok {
			t.Fatal("Peek found the discarded value")
		}
		if v1.closed() {
			t.Fatal("discarded value closed while another lease holds it")
		}
		l2.Release()
		if !v1.closed() {
			t.Fatal("discarded value not closed at its last release")
		}
		mu.Lock()
		if len(reasons) != 1 || reasons[0] != EvictDiscarded {
			t.Errorf("OnEvict reasons %v; want [discarded]", reasons)
		}
		mu.Unlock()

		// Discard of an older value never removes the newer build.
		old, _ := c.Lease(ctx, "k")
		c.Invalidate("k")
		v3 := mustGet(t, c, "k")
		old.Discard()
		if got, ok := c.Peek("k"); !ok || got != v3 {
			t.Errorf("Discard of an older value removed the newer build")
		}
		if !old.Value().closed() {
			t.Errorf("the old value was not closed at its Discard")
		}
		old.Discard() // idempotent
		if s := c.Stats(); s.Leased != 0 || s.EvictionsByReason[EvictDiscarded] != 1 {
			t.Errorf("Stats: Leased %d, discarded %d; want 0, 1", s.Leased, s.EvictionsByReason[EvictDiscarded])
		}
	})
}

func TestLeakThresholdReportsOnceWithStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		c := newTestCache(t, func(context.Context, string) (string, error) { return "v", nil }, &Options[string, string]{
			LeakThreshold: 2 * time.Second,
			Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
			KeyString:     func(k string) string { return "tenant-" + k },
		})
		l, err := c.Lease(context.Background(), "k") // the line the report must name
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := c.Stats(); s.LeaseLeaks != 0 {
			t.Fatalf("LeaseLeaks = %d before the threshold", s.LeaseLeaks)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		out := logs.String()
		if n := strings.Count(out, "lease held longer than LeakThreshold"); n != 1 {
			t.Fatalf("%d reports of a lease held past LeakThreshold; want 1:\n%s", n, out)
		}
		for _, want := range []string{"level=WARN", "key=tenant-k", "held=", "TestLeakThresholdReportsOnceWithStack", "lease_test.go"} {
			if !strings.Contains(out, want) {
				t.Errorf("leak report lacks %q:\n%s", want, out)
			}
		}
		if s := c.Stats(); s.LeaseLeaks != 1 {
			t.Errorf("LeaseLeaks = %d; want 1", s.LeaseLeaks)
		}
		l.Release()
	})
}

// A lease keeps its value open across an Invalidate of its key: the value
// closes at the release, not before.
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

// TestLeasesRaceRemovals takes and releases leases of a few hot keys on
// every P, releasing some on other goroutines (other Ps), while other
// goroutines invalidate, discard and evict (MaxEntries below the keys):
// a value is never closed while a lease of it is out, and, after
// Shutdown, every value built was closed exactly once. This is the race
// between a lease counted in its P's slot and the removal that moves the
// slots' counts into the entry's word (entry.go).
func TestLeasesRaceRemovals(t *testing.T) {
	for _, policy := range []Policy{LRU, TinyLFU} {
		t.Run(policy.String(), func(t *testing.T) {
			var b builder
			c, err := New(b.build, &Options[string, *resource]{MaxEntries: 6, Policy: policy})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
			handoff := make(chan Lease[string, *resource], 64)
			var wg sync.WaitGroup
			var failed atomic.Bool
			check := func(l Lease[string, *resource]) {
				if l.Value().closed() {
					failed.Store(true)
				}
			}
			const rounds = 4000
			for g := range 4 * runtime.GOMAXPROCS(0) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						k := keys[(i*7+g)%3] // the hot keys: a, b, c
						if i%5 == 0 {
							k = keys[(i+g)%len(keys)]
						}
						l, err := c.Lease(ctx, k)
						if err != nil {
							failed.Store(true)
							return
						}
						check(l)
						switch i % 7 {
						case 0:
							select {
							case handoff <- l: // released on another goroutine
								continue
							default:
							}
						case 1:
							runtime.Gosched()
							check(l)
						case 2:
							if g%3 == 0 {
								l.Discard()
								continue
							}
						}
						l.Release()
					}
				}()
			}
			stop := make(chan struct{})
			var side sync.WaitGroup
			side.Add(2)
			go func() { // releases handed-off leases
				defer side.Done()
				for {
					select {
					case l := <-handoff:
						check(l)
						runtime.Gosched()
						check(l)
						l.Release()
					case <-stop:
						for {
							select {
							case l := <-handoff:
								l.Release()
							default:
								return
							}
						}
					}
				}
			}()
			go func() { // removes the hot keys
				defer side.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c.Invalidate(keys[i%3])
					runtime.Gosched()
				}
			}()
			wg.Wait()
			close(stop)
			side.Wait()
			if failed.Load() {
				t.Fatal("a leased value was closed while its lease was out, or Lease failed")
			}
			if st := c.Stats(); st.Leased != 0 {
				t.Fatalf("Leased = %d after every release; want 0", st.Leased)
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := c.Shutdown(sctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			b.checkAllClosedOnce(t)
		})
	}
}
