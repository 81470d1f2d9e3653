package redisbudget

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache/budget"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// envRedis points the tests at a real Redis (CI sets it); without it they
// use miniredis.
const envRedis = "RESCACHE_REDIS_ADDR"

// redisFor returns a client of the test's Redis and, with miniredis, the
// server (nil with a real Redis).
func redisFor(t testing.TB) (*redis.Client, *miniredis.Miniredis) {
	t.Helper()
	var mr *miniredis.Miniredis
	addr := os.Getenv(envRedis)
	if addr == "" {
		mr = miniredis.RunT(t)
		addr = mr.Addr()
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("%s=%q: %v", envRedis, addr, err)
	}
	return c, mr
}

// name returns a budget name of the test's own, so that tests against a
// shared Redis do not meet.
func name(t *testing.T) string {
	return fmt.Sprintf("rb-test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), rand.Int64())
}

func newBudget(t *testing.T, o Options) *Budget {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	waitFor(t, "the budget joins the fleet", func() bool { return !b.Stats().Fallback })
	return b
}

// waitFor polls cond (Redis is real I/O: no synctest bubble) for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOptionsValidated(t *testing.T) {
	c, _ := redisFor(t)
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Name: "x", Max: 1}, "Client is nil"},
		{Options{Client: c, Max: 1}, "Name is empty"},
		{Options{Client: c, Name: "x"}, "Max is 0"},
		{Options{Client: c, Name: "x", Max: 4, LocalMax: 5}, "LocalMax is 5"},
		{Options{Client: c, Name: "x", Max: 4, Lease: time.Millisecond}, "Lease is 1ms"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error saying %q", tc.o, err, tc.want)
		}
	}
}

// Three processes' budgets (three instances here) share Max places: under
// concurrent Acquire and Release from all of them, the places held across
// the fleet never exceed Max, and every instance gets places.
func TestFleetNeverExceedsMax(t *testing.T) {
	c, _ := redisFor(t)
	const max = 8
	n := name(t)
	var bs []*Budget
	for i := range 3 {
		bs = append(bs, newBudget(t, Options{Client: c, Name: n, Max: max, Instance: fmt.Sprint("i", i), Lease: time.Second}))
	}
	var held, peak atomic.Int64
	got := make([]atomic.Int64, len(bs))
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for i, b := range bs {
		for range 6 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					err := b.Acquire(ctx)
					cancel()
					if err != nil {
						t.Errorf("instance %d: Acquire: %v", i, err)
						return
					}
					h := held.Add(1)
					for p := peak.Load(); h > p && !peak.CompareAndSwap(p, h); p = peak.Load() {
					}
					got[i].Add(1)
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // a connection's life
					held.Add(-1)
					b.Release()
				}
			})
		}
	}
	wg.Wait()
	t.Logf("places taken per instance: %d %d %d; at most %d held at once (Max %d)", got[0].Load(), got[1].Load(), got[2].Load(), peak.Load(), max)
	if p := peak.Load(); p > max {
		t.Errorf("%d places held at once across the fleet; Max is %d", p, max)
	}
	for i := range got {
		if got[i].Load() == 0 {
			t.Errorf("instance %d never got a place", i)
		}
	}
	for _, b := range bs {
		if s := b.Stats(); s.Held != 0 || s.Leased != 0 || s.Waiting != 0 {
			t.Errorf("after the load: %+v; want nothing held", s)
		}
	}
}

// A process that crashes (its renewer stops, nothing is released) gives
// its places back to the fleet within one lease of its last renewal.
func TestCrashedInstanceFreesItsPlaces(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	const lease = 600 * time.Millisecond
	a := newBudget(t, Options{Client: c, Name: n, Max: 3, Lease: lease, Instance: "a"})
	for range 3 {
		if err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	b := newBudget(t, Options{Client: c, Name: n, Max: 3, Lease: lease, Instance: "b"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := b.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with the fleet full: %v; want the deadline", err)
	}
	cancel()
	crashed := time.Now()
	a.crash()
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Since(crashed)
	t.Logf("a crashed instance's places came back after %v (lease %v)", back.Round(time.Millisecond), lease)
	if back > lease+200*time.Millisecond {
		t.Errorf("places came back after %v; want within the lease, %v", back, lease)
	}
	b.Release()
}

// A canceled Acquire holds nothing, here or in Redis.
func TestCanceledAcquireHoldsNothing(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	b := newBudget(t, Options{Client: c, Name: n, Max: 1, Lease: 600 * time.Millisecond})
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	waits := b.Stats().WaitCount // the first waits while the new fleet's store starts
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire over Max: %v; want the deadline", err)
	}
	if s := b.Stats(); s.Held != 1 || s.Waiting != 0 || s.WaitCount != waits+1 {
		t.Errorf("after a canceled Acquire: %+v; want 1 held, none waiting, one wait", s)
	}
	if v, _ := c.HGet(context.Background(), "{"+n+"}:counts", b.Instance()).Int(); v != 1 {
		t.Errorf("Redis counts %d places for the instance; want 1", v)
	}
	b.Release()
}

// A release hands the place to this process's first waiter.
func TestReleaseHandsThePlaceToAWaiter(t *testing.T) {
	c, _ := redisFor(t)
	b := newBudget(t, Options{Client: c, Name: name(t), Max: 1, Lease: 600 * time.Millisecond})
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(context.Background()) }()
	waitFor(t, "the second Acquire waits", func() bool { return b.Stats().Waiting == 1 })
	if !b.Contended() {
		t.Error("Contended() is false while a caller waits")
	}
	b.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Held != 1 || s.Waiting != 0 {
		t.Errorf("%+v; want the waiter holding the place", s)
	}
	b.Release()
}

// Another process's need makes this one reclaim idle connections and
// report itself contended.
func TestNeedElsewhereRunsTheReclaimers(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	a := newBudget(t, Options{Client: c, Name: n, Max: 1, Instance: "a", Lease: 600 * time.Millisecond})
	b := newBudget(t, Options{Client: c, Name: n, Max: 1, Instance: "b", Lease: 600 * time.Millisecond})
	if err := a.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reclaimed atomic.Int32
	remove := a.AddReclaimer(budget.Reclaimer{Reclaim: func() int {
		if reclaimed.Add(1) == 1 {
			go a.Release() // the idle connection closes, and gives its place back
			return 1
		}
		return 0
	}})
	defer remove()
	time.Sleep(100 * time.Millisecond) // let a's listener subscribe
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reclaimed.Load() == 0 {
		t.Error("b's need did not reach a's reclaimer")
	}
	b.Release()
}

// Redis down: the budget falls back to LocalMax places within two thirds
// of the lease, never more, and returns to the fleet when Redis answers,
// with what it holds registered.
func TestRedisDownFallsBackToTheLocalShare(t *testing.T) {
	c, _ := redisFor(t)
	cc, l := cutClient(t, c) // Redis stops answering this process
	n := name(t)
	const lease = 600 * time.Millisecond
	b := newBudget(t, Options{Client: cc, Name: n, Max: 8, LocalMax: 2, Lease: lease})
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.set(true)
	waitFor(t, "the switch to the fallback share", func() bool { return b.Stats().Fallback })
	s := b.Stats()
	if s.Fallbacks != 1 || s.RenewFailures == 0 {
		t.Errorf("on the fallback share: %+v; want one fallback and failed renewals", s)
	}
	if err := b.Acquire(context.Background()); err != nil { // the second of LocalMax 2
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third place on a fallback share of 2: %v; want the deadline", err)
	}
	l.set(false)
	waitFor(t, "the return to the fleet budget", func() bool { return !b.Stats().Fallback })
	if v, _ := c.HGet(context.Background(), "{"+n+"}:counts", b.Instance()).Int(); v != 2 {
		t.Errorf("Redis counts %d places for the instance after the outage; want its 2", v)
	}
	b.Release()
	b.Release()
	waitFor(t, "the releases reach Redis", func() bool {
		v, _ := c.HGet(context.Background(), "{"+n+"}:counts", b.Instance()).Int()
		return v == 0
	})
}

// Redis restarted empty: it refuses new places for one lease, while the
// live instances register what they hold, so the fleet never exceeds Max
// across the loss.
func TestRedisFlushedRecovers(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	const lease = 600 * time.Millisecond
	a := newBudget(t, Options{Client: c, Name: n, Max: 2, Lease: lease, Instance: "a"})
	b := newBudget(t, Options{Client: c, Name: n, Max: 2, Lease: lease, Instance: "b"})
	for range 2 {
		if err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	c.Del(ctx, "{"+n+"}:holders", "{"+n+"}:counts", "{"+n+"}:epoch") // the store lost the fleet's state
	short, cancel := context.WithTimeout(ctx, lease/2)
	defer cancel()
	if err := b.Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an Acquire right after the loss: %v; want it refused while the instances re-register", err)
	}
	waitFor(t, "a registers its places again", func() bool {
		v, _ := c.HGet(ctx, "{"+n+"}:counts", "a").Int()
		return v == 2
	})
	late, cancel2 := context.WithTimeout(ctx, 2*lease)
	defer cancel2()
	if err := b.Acquire(late); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an Acquire with a's 2 places registered again: %v; want it refused (Max 2)", err)
	}
	a.Release()
	if err := b.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	b.Release()
	a.Release()
}

// Close gives the instance's places back at once and ends waiting calls.
func TestCloseLeavesTheFleet(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	a, err := New(Options{Client: c, Name: n, Max: 1, Instance: "a", Lease: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a joins", func() bool { return !a.Stats().Fallback })
	if err := a.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- a.Acquire(context.Background()) }()
	waitFor(t, "a waits", func() bool { return a.Stats().Waiting == 1 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Errorf("a waiting Acquire at Close: %v; want ErrClosed", err)
	}
	if err := a.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close: %v; want ErrClosed", err)
	}
	b := newBudget(t, Options{Client: c, Name: n, Max: 1, Instance: "b", Lease: 600 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := b.Acquire(ctx); err != nil {
		t.Fatalf("a's place after its Close: %v", err)
	}
	b.Release()
	// a's connection closes after its budget (a pool closing late): the
	// place is given back locally, and Redis does not count a again.
	a.Release()
	if ok, err := c.HExists(ctx, a.keys[1], "a").Result(); err != nil || ok {
		t.Errorf("Redis counts a after a Release that followed its Close (%v, %v)", ok, err)
	}
}

// Releases that race Close never register the closed process again: no
// script of a process runs after Close's leave (a fleet's rolling update
// found Redis counting a stopped instance whose last connections closed
// while it left).
func TestReleaseRacingCloseLeavesNoCount(t *testing.T) {
	c, _ := redisFor(t)
	n := name(t)
	for round := range 20 {
		id := "r" + strconv.Itoa(round)
		a, err := New(Options{Client: c, Name: n, Max: 8, Instance: id, Lease: 600 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, id+" joins", func() bool { return !a.Stats().Fallback })
		for range 8 {
			if err := a.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(a.Release)
		}
		wg.Go(func() {
			if err := a.Close(); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		if ok, err := c.HExists(context.Background(), a.keys[1], id).Result(); err != nil || ok {
			t.Fatalf("round %d: Redis counts %s after its Close (%v, %v)", round, id, ok, err)
		}
	}
}
