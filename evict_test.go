package rescache

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of eviction and expiry: LRU order, idle timeout, lifetime, leased
// entries, and the cost of a sweep.

// A full cache evicts its least recently used entry, with EvictCapacity.
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

// TestLeasedEntryIsNotIdleToItsCallers holds a lease taken on a found
// key (the hit path's, which its P's slot counts, not the entry's word)
// past IdleTimeout: a Get of the key in the meantime is served the same
// value, not an idle-expired miss, and the sweep parks the entry.
func TestLeasedEntryIsNotIdleToItsCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: time.Minute})
		ctx := context.Background()
		v := mustGet(t, c, "k")
		l, err := c.Lease(ctx, "k") // a hit
		if err != nil || l.Value() != v {
			t.Fatalf("Lease = %v, %v; want the built value", l.Value(), err)
		}
		for range 5 {
			time.Sleep(59 * time.Second)
			if got := mustGet(t, c, "k"); got != v {
				t.Fatal("a Get of a leased key past IdleTimeout built a new value")
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if got, _ := c.Peek("k"); got != v {
				t.Fatal("a leased entry was evicted as idle")
			}
		}
		l.Release()
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if !v.closed() {
			t.Fatal("not closed IdleTimeout after release")
		}
		if n := b.count("k"); n != 1 {
			t.Fatalf("builds = %d; want 1", n)
		}
	})
}

// With a clock tick far coarser than IdleTimeout, a Get past the idle
// deadline and before the next sweep is judged by the system clock on the
// hit path (expiry): a lease there, counted in its P's slot rather than
// the entry's word, still makes the entry not idle.
func TestLeasedEntryIsNotIdleBetweenSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{IdleTimeout: time.Second, ClockResolution: time.Minute})
		v := mustGet(t, c, "k")
		l, err := c.Lease(context.Background(), "k") // a hit
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second) // before the janitor's first tick
		if got := mustGet(t, c, "k"); got != v {
			t.Fatal("a Get of a leased key past IdleTimeout built a new value")
		}
		l.Release()
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

// A sweep does not look again and again at entries leased past their idle
// deadline: its cost stays small however many long leases are out, and an
// entry idles out after its last release.
func TestSweepCostWithLongLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, func(_ context.Context, key string) (int, error) { return 0, nil }, &Options[string, int]{
			IdleTimeout: time.Second,
		})
		var releases []func()
		for i := range 1000 {
			_, release, err := c.Acquire(context.Background(), string(rune('a'+i%26))+string(rune(i)))
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		time.Sleep(2 * time.Second) // every entry past its idle deadline, leased
		synctest.Wait()
		c.sweep(c.advance()) // parks the leased entries
		if looked := c.sweep(c.advance()); looked > 2 {
			t.Errorf("a sweep with 1,000 long leases out looked at %d entries; want at most 2", looked)
		}
		for _, r := range releases {
			r()
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := c.Len(); n != 0 {
			t.Errorf("Len = %d two idle timeouts after the releases; want 0", n)
		}
	})
}

// A slow Close must not stop the clock: an entry is never served after its
// deadline because a hook of another entry is slow.
func TestSlowCloseDoesNotDelayExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{
			MaxLifetime: 20 * time.Millisecond,
			Close: func(key string, r *resource) error {
				if key == "slow" {
					time.Sleep(time.Second)
				}
				return r.Close()
			},
		})
		mustGet(t, c, "slow")
		time.Sleep(15 * time.Millisecond)
		mustGet(t, c, "k") // lives until 35 ms
		time.Sleep(85 * time.Millisecond)
		// At 100 ms, "slow" expired at 20 ms and its Close runs for a
		// second; "k" expired at 35 ms.
		if _, ok := c.Peek("k"); ok {
			t.Errorf("Peek(k) found an entry 65 ms past its MaxLifetime")
		}
		if r := mustGet(t, c, "k"); r.gen != 2 {
			t.Errorf("Get(k) 65 ms past its MaxLifetime returned build #%d; want a new build (#2)", r.gen)
		}
	})
}
