package redisbudget

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The tests of this file run in a synctest bubble: miniredis serves its
// clients on in-memory pipes (miniredis.Dial), Redis's TIME and the
// budgets' clocks are the bubble's, so that every lease deadline can be
// checked to the millisecond, without sleeps in real time. They use
// miniredis even when RESCACHE_REDIS_ADDR names a real Redis (a socket
// cannot join a bubble); the tests of redisbudget_test.go and
// outage_test.go run the same paths against the real one.

// store is a miniredis inside the bubble and the links of its clients.
type store struct {
	m *miniredis.Miniredis
}

func newStore(t *testing.T) *store {
	m := miniredis.NewMiniRedis()
	t.Cleanup(m.Close)
	return &store{m: m}
}

// client returns a client of the store through a link of its own (see
// link in outage_test.go).
func (s *store) client(t *testing.T) (*redis.Client, *link) {
	l := &link{base: func(context.Context, string, string) (net.Conn, error) { return s.m.Dial() }}
	c := redis.NewClient(&redis.Options{
		Addr:       "127.0.0.1:6379", // never dialed: an IP, so the client resolves no name
		MaxRetries: -1,
		// No maintenance notifications (a Redis Enterprise feature): no
		// goroutine of theirs in the bubble.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		Dialer:                   l.dial,
	})
	t.Cleanup(func() { c.Close() })
	return c, l
}

// counted returns the places the store counts for instance id (0 once its
// lease expired and a script dropped it; a script runs at every check).
func counted(t *testing.T, c *redis.Client, b *Budget, id string) int {
	t.Helper()
	ctx := context.Background()
	// A renewal of b (delta 0) runs the expiry sweep, as any script would.
	if _, err := placeScript.Run(ctx, c, b.keys, "probe", 0, b.o.Max, b.o.Lease.Milliseconds(), 0, "0", "0", "1", "0").Result(); err != nil {
		t.Fatal(err)
	}
	c.ZRem(ctx, b.keys[0], "probe")
	c.HDel(ctx, b.keys[1], "probe")
	v, err := c.HGet(ctx, b.keys[1], id).Int()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustNew(t *testing.T, o Options) *Budget {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The lease's arithmetic, to the millisecond: a new store grants nothing
// for two thirds of a lease; a process cut off from Redis stops trusting
// its places two thirds of a lease after the send time of its last
// answered renewal, a third of a lease before Redis gives them away; Redis
// gives them to a waiter of another process one lease after that
// renewal; mended, the process registers what it holds at its next
// renewal and is back on the fleet budget.
func TestLeaseArithmetic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 3 * time.Second
		s := newStore(t)
		ca, la := s.client(t)
		cb, _ := s.client(t)
		start := time.Now()
		a := mustNew(t, Options{Client: ca, Name: "lease", Max: 2, LocalMax: 1, Lease: lease, Instance: "a"})
		b := mustNew(t, Options{Client: cb, Name: "lease", Max: 2, LocalMax: 1, Lease: lease, Instance: "b"})

		// A new store: no place for two thirds of a lease.
		if err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, want := time.Since(start), lease*2/3; got < want || got > want+a.retry {
			t.Errorf("the first place of a new store came after %v; want %v (two thirds of the lease) to %v", got, want, want+a.retry)
		}
		if err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}

		// Renewals run at start + k*lease/3. Cut a half way between two.
		synctest.Wait()
		time.Sleep(time.Until(start.Add(3*lease/3 + lease/6)))
		lastRenewal := start.Add(3 * lease / 3)
		la.set(true)
		cut := time.Now()

		got := make(chan time.Time, 1)
		go func() {
			if err := b.Acquire(context.Background()); err != nil {
				t.Error(err)
			}
			got <- time.Now()
		}()
		var fellBack time.Time
		var granted time.Time
		for step := 0; granted.IsZero(); step++ {
			now := time.Now()
			sa := a.Stats()
			if sa.Fallback && fellBack.IsZero() {
				fellBack = now
			}
			select {
			case granted = <-got:
			default:
			}
			if !sa.Fallback && counted(t, cb, b, "a") != 2 {
				t.Fatalf("at %v after the cut, a trusts its 2 places but Redis counts %d", now.Sub(cut), counted(t, cb, b, "a"))
			}
			if step > 1000 {
				t.Fatal("b got no place within 10s of the cut")
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("cut %v after a's last answered renewal; a fell back %v after it, b got a's place %v after it (lease %v)",
			cut.Sub(lastRenewal), fellBack.Sub(lastRenewal), granted.Sub(lastRenewal), lease)
		if d := fellBack.Sub(lastRenewal); d < lease*2/3 || d > lease*2/3+10*time.Millisecond {
			t.Errorf("a fell back %v after its last renewal; want two thirds of the lease, %v", d, lease*2/3)
		}
		if d := granted.Sub(lastRenewal); d < lease || d > lease+b.retry {
			t.Errorf("b got a's place %v after a's last renewal; want the lease, %v (to %v)", d, lease, lease+b.retry)
		}
		if !fellBack.Before(granted) {
			t.Errorf("a fell back at %v, after its place went to b at %v", fellBack, granted)
		}

		// On the fallback share a gives its places back, then Redis
		// answers it again: the next renewal registers what it holds (0).
		a.Release()
		a.Release()
		la.set(false)
		mended := time.Now()
		for a.Stats().Fallback {
			time.Sleep(time.Millisecond)
		}
		if d := time.Since(mended); d > lease/3 {
			t.Errorf("a returned to the fleet %v after the link was mended; want within a renewal, %v", d, lease/3)
		}
		// The renewal that took a back may have been sent before the two
		// releases (Redis then counts more than a holds, never less); the
		// next one sets the count to what a holds.
		time.Sleep(lease / 3)
		synctest.Wait()
		if n := counted(t, cb, b, "a"); n != 0 {
			t.Errorf("Redis counts %d places for a a renewal after its return; want 0 (a: %+v)", n, a.Stats())
		}
		b.Release()
	})
}

// A process that starts while the fleet is full asks Redis and waits: it
// never turns to its fallback share while Redis answers it, so it never
// opens a connection the fleet does not count.
func TestNewcomerNeverFallsBackWhileRedisAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 900 * time.Millisecond
		s := newStore(t)
		ca, _ := s.client(t)
		a := mustNew(t, Options{Client: ca, Name: "newcomer", Max: 2, Lease: lease, Instance: "a"})
		for range 2 {
			if err := a.Acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		cn, _ := s.client(t)
		n := mustNew(t, Options{Client: cn, Name: "newcomer", Max: 2, Lease: lease, Instance: "n"})
		ctx, cancel := context.WithTimeout(context.Background(), 5*lease)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- n.Acquire(ctx) }()
		for {
			select {
			case err := <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("the newcomer's Acquire with the fleet full: %v; want the deadline", err)
				}
				if s := n.Stats(); s.Held != 0 || s.Fallbacks != 0 {
					t.Errorf("the newcomer after its wait: %+v; want nothing held, no fallback", s)
				}
				a.Release()
				a.Release()
				return
			default:
			}
			if s := n.Stats(); s.Fallback || s.Held != 0 {
				t.Fatalf("the newcomer, with Redis answering: %+v; want it waiting on the fleet budget", s)
			}
			time.Sleep(lease / 30)
		}
	})
}

// Redis loses the fleet's state: no new place for two thirds of a lease
// from the first script that finds the store empty, while the live
// processes register what they hold at their next renewal (within a third
// of a lease).
func TestStoreLossWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 3 * time.Second
		s := newStore(t)
		ca, _ := s.client(t)
		cb, _ := s.client(t)
		a := mustNew(t, Options{Client: ca, Name: "loss", Max: 2, Lease: lease, Instance: "a"})
		b := mustNew(t, Options{Client: cb, Name: "loss", Max: 2, Lease: lease, Instance: "b"})
		if err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		time.Sleep(lease / 6) // between two renewals
		s.m.FlushAll()
		lost := time.Now()
		if err := b.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(lost); d < lease*2/3 || d > lease*2/3+b.retry {
			t.Errorf("the first place after the loss came %v after it; want two thirds of the lease, %v", d, lease*2/3)
		}
		if n := counted(t, cb, b, "a"); n != 1 {
			t.Errorf("Redis counts %d places for a after the window; want its 1", n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), lease)
		defer cancel()
		if err := b.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a place beyond Max after the loss: %v; want the deadline", err)
		}
		a.Release()
		b.Release()
	})
}

// Fair across processes: one process whose callers ask without pause does
// not starve another's. Max 2; a runs six callers that each take a place,
// use it 10ms, give it back and ask again; b runs one. b's callers are
// served in turns with a's: none waits long, and b takes a share of the
// places.
func TestBusyProcessDoesNotStarveAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 3 * time.Second
		s := newStore(t)
		ca, _ := s.client(t)
		cb, _ := s.client(t)
		a := mustNew(t, Options{Client: ca, Name: "fair", Max: 2, Lease: lease, Instance: "a"})
		b := mustNew(t, Options{Client: cb, Name: "fair", Max: 2, Lease: lease, Instance: "b"})
		synctest.Wait()
		time.Sleep(lease) // past the new store's window
		deadline := time.Now().Add(4 * time.Second)
		var held atomic.Int64
		run := func(bg *Budget, took *atomic.Int64, longest *atomic.Int64) {
			for time.Now().Before(deadline) {
				asked := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := bg.Acquire(ctx)
				cancel()
				if err != nil {
					t.Errorf("%s: %v", bg.Instance(), err)
					return
				}
				if w := int64(time.Since(asked)); w > longest.Load() {
					longest.Store(w)
				}
				if h := held.Add(1); h > 2 {
					t.Errorf("%d places held; Max 2", h)
				}
				took.Add(1)
				time.Sleep(10 * time.Millisecond)
				held.Add(-1)
				bg.Release()
			}
		}
		var tookA, tookB, longA, longB atomic.Int64
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() { run(a, &tookA, &longA) })
		}
		wg.Go(func() { run(b, &tookB, &longB) })
		wg.Wait()
		t.Logf("in 4s: a's 6 callers took %d places (longest wait %v), b's 1 caller took %d (longest wait %v)",
			tookA.Load(), time.Duration(longA.Load()), tookB.Load(), time.Duration(longB.Load()))
		if tookB.Load() < tookA.Load()/8 {
			t.Errorf("b took %d places to a's %d; want at least an eighth of a's (a share for one caller of seven)", tookB.Load(), tookA.Load())
		}
		if w := time.Duration(longB.Load()); w > 200*time.Millisecond {
			t.Errorf("b's caller waited %v at most; want it served in turns (within 200ms)", w)
		}
	})
}
