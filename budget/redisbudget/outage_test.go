package redisbudget

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// link is a client's way to the test's Redis that the test can cut (every
// open connection closed, every dial refused) and mend: one process cut
// off while the others still reach Redis, on miniredis and a real Redis
// alike.
type link struct {
	mu    sync.Mutex // guards down and conns
	down  bool
	conns []net.Conn
	// base opens a connection: a TCP dial, or miniredis.Dial in a bubble.
	base func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (l *link) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, errors.New("link cut by the test")
	}
	c, err := l.base(ctx, network, addr)
	if err == nil {
		l.conns = append(l.conns, c)
	}
	return c, err
}

func (l *link) set(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = down
	if down {
		for _, c := range l.conns {
			c.Close()
		}
		l.conns = nil
	}
}

// cutClient returns a client of the test's Redis (c's) through a link.
func cutClient(t *testing.T, c *redis.Client) (*redis.Client, *link) {
	t.Helper()
	l := &link{base: (&net.Dialer{}).DialContext}
	cc := redis.NewClient(&redis.Options{Addr: c.Options().Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, Dialer: l.dial})
	t.Cleanup(func() { cc.Close() })
	return cc, l
}

// holdElsewhere registers places for an instance that is not a Budget of
// the test (its lease an hour long).
func holdElsewhere(t *testing.T, c *redis.Client, n, id string, places int) {
	t.Helper()
	ctx := context.Background()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	p := "{" + n + "}:"
	c.ZAdd(ctx, p+"holders", redis.Z{Score: float64(now.Add(time.Hour).UnixMilli()), Member: id})
	c.HSet(ctx, p+"counts", id, places)
}

// trustEnds waits until b no longer trusts its lease (the next take
// switches it to the fallback share).
func trustEnds(t *testing.T, b *Budget) {
	t.Helper()
	waitFor(t, "the lease's trust ends", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.fallback || time.Now().After(b.validUntil)
	})
}

// A process cut off from Redis for less than a lease takes a place on its
// fallback share; back on the fleet, Redis counts what it holds, even when
// the fleet is then over Max (the place exists). Renewals used to raise
// the count as a take, which Redis refused while the fleet was full, so
// that the fleet stayed over Max by it, unseen.
func TestOutageCountIsSetOnReturn(t *testing.T) {
	c, _ := redisFor(t)
	cc, l := cutClient(t, c)
	n := name(t)
	const lease = 3 * time.Second // the outage must stay within it
	holdElsewhere(t, c, n, "other", 3)
	b := newBudget(t, Options{Client: cc, Name: n, Max: 4, LocalMax: 2, Lease: lease, Instance: "b"})
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.set(true)
	trustEnds(t, b)
	if err := b.Acquire(context.Background()); err != nil { // on the fallback share
		t.Fatal(err)
	}
	if s := b.Stats(); !s.Fallback || s.Held != 2 {
		t.Fatalf("after the cut: %+v; want the fallback share with 2 held", s)
	}
	l.set(false)
	waitFor(t, "the return to the fleet budget", func() bool { return !b.Stats().Fallback })
	if v, _ := c.HGet(context.Background(), "{"+n+"}:counts", "b").Int(); v != 2 {
		t.Errorf("Redis counts %d places for b after the outage; want the 2 it holds", v)
	}
	b.Release()
	b.Release()
}

// Back from its fallback share, a process holds the store in recovery for
// two thirds of a lease: the others may still be on their fallback shares
// with places Redis does not count yet, and no new place is granted until
// they have registered them.
func TestReturnFromFallbackHoldsNewPlaces(t *testing.T) {
	c, _ := redisFor(t)
	cc, l := cutClient(t, c)
	n := name(t)
	const lease = 900 * time.Millisecond
	a := newBudget(t, Options{Client: cc, Name: n, Max: 4, Lease: lease, Instance: "a"})
	other := newBudget(t, Options{Client: c, Name: n, Max: 4, Lease: lease, Instance: "other"})
	l.set(true)
	trustEnds(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), lease/10)
	a.Acquire(ctx) // switches a to its fallback share (a place, or the deadline)
	cancel()
	waitFor(t, "a falls back", func() bool { return a.Stats().Fallback })
	l.set(false)
	waitFor(t, "a returns", func() bool { return !a.Stats().Fallback })
	short, cancel2 := context.WithTimeout(context.Background(), lease/3)
	defer cancel2()
	if err := other.Acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a place right after a's return: %v; want it held back while the fleet registers", err)
		if err == nil {
			other.Release()
		}
	}
	if err := other.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	other.Release()
	if s := a.Stats(); s.Held > 0 {
		a.Release()
	}
}

// A process starting while Redis does not answer it opens nothing for
// two thirds of a lease (Redis may be reachable by a full fleet), then
// keeps to its fallback share.
func TestStartWithoutRedisWaitsBeforeTheFallback(t *testing.T) {
	c, _ := redisFor(t)
	cc, l := cutClient(t, c)
	l.set(true)
	const lease = 900 * time.Millisecond
	start := time.Now()
	b, err := New(Options{Client: cc, Name: name(t), Max: 4, LocalMax: 1, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < lease*2/3 {
		t.Errorf("a place after %v without Redis; want none before %v", d, lease*2/3)
	}
	if s := b.Stats(); !s.Fallback || s.Fallbacks != 1 {
		t.Errorf("after the start without Redis: %+v; want the fallback share, one fallback", s)
	}
	b.Release()
}
