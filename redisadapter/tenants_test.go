package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
)

// newCache returns the cache New makes of opts, shut down at t's cleanup.
func newCache(t *testing.T, opts redisadapter.Options[int]) *rescache.Cache[int, *redis.Client] {
	t.Helper()
	c, err := redisadapter.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { shutdown(t, c) })
	return c
}

// shutdown shuts c down within 10s.
func shutdown[K comparable, V any](t *testing.T, c *rescache.Cache[K, V]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// liveTenants returns the tenants of n whose clients c holds.
func liveTenants(c *rescache.Cache[int, *redis.Client], n int) []int {
	var live []int
	for tenant := range n {
		if _, ok := c.Peek(tenant); ok {
			live = append(live, tenant)
		}
	}
	return live
}

// Test 1 of the issue: 500 concurrent calls over 16 tenants build one client
// per tenant, and a key written for one tenant is invisible to the others.
func TestConcurrentCallsOneClientPerTenant(t *testing.T) {
	const tenants, calls = 16, 500
	f := newFleet(t, tenants, false)
	var builds [tenants]atomic.Int32
	c := newCache(t, redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			builds[tenant].Add(1)
			return f.options(tenant), nil
		},
	})

	ctx := context.Background()
	clients := make([]*redis.Client, calls)
	errs := make([]error, calls)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			<-start
			tenant := i % tenants
			rc, err := c.Get(ctx, tenant)
			if err != nil {
				errs[i] = err
				return
			}
			clients[i] = rc
			errs[i] = rc.Set(ctx, f.key("call", i), tenant, 0).Err()
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent calls over %d tenants (%s): %v", calls, tenants, serverKind(f), time.Since(began))

	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d (tenant %d): %v", i, i%tenants, err)
		}
	}
	for tenant := range tenants {
		if n := builds[tenant].Load(); n != 1 {
			t.Errorf("tenant %d: options function called %d times; want 1", tenant, n)
		}
	}
	byTenant := make(map[int]*redis.Client)
	for i, rc := range clients {
		tenant := i % tenants
		if first, ok := byTenant[tenant]; !ok {
			byTenant[tenant] = rc
		} else if rc != first {
			t.Errorf("tenant %d: call %d got client %p; call %d got %p", tenant, i, rc, tenant, first)
		}
	}
	seen := make(map[*redis.Client]int)
	for tenant, rc := range byTenant {
		if other, ok := seen[rc]; ok {
			t.Errorf("tenants %d and %d share client %p", other, tenant, rc)
		}
		seen[rc] = tenant
	}
	if s := c.Stats(); s.Builds != tenants || s.Entries != tenants {
		t.Errorf("Stats: Builds = %d, Entries = %d; want %d, %d", s.Builds, s.Entries, tenants, tenants)
	}

	// Every key is visible to the tenant that wrote it, and to no other.
	for tenant := range tenants {
		rc, err := c.Get(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]string, calls)
		for i := range calls {
			keys[i] = f.key("call", i)
		}
		vals, err := rc.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			writer := i % tenants
			switch {
			case writer == tenant && v != strconv.Itoa(tenant):
				t.Errorf("tenant %d: GET %s = %v; want %d", tenant, keys[i], v, tenant)
			case writer != tenant && v != nil:
				t.Errorf("tenant %d sees key %s written by tenant %d (value %v)", tenant, keys[i], writer, v)
			}
		}
	}
}

func serverKind(f *fleet) string {
	if f.real {
		return "Redis at " + f.addr
	}
	return "miniredis"
}

// Test 2 of the issue: with MaxEntries 4 over 16 tenants, the connections of
// evicted tenants leave the server and the total stays bounded.
func TestEvictedTenantsConnectionsLeaveServer(t *testing.T) {
	const (
		tenants    = 16
		maxEntries = 4
		poolSize   = 2
		workers    = 8
	)
	f := newFleet(t, tenants, true)
	var evictions atomic.Int32
	c := newCache(t, redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			o := f.options(tenant)
			o.PoolSize = poolSize
			return o, nil
		},
		Cache: rescache.Options[int, *redis.Client]{
			MaxEntries: maxEntries,
			OnEvict: func(int, *redis.Client, rescache.EvictReason) {
				evictions.Add(1)
			},
		},
	})
	ctx := context.Background()

	// settled waits until exactly the cached tenants have connections on the
	// server, at most poolSize each, and returns the total.
	settled := func(phase string) int {
		t.Helper()
		var total int
		waitFor(t, 5*time.Second, phase+": only cached tenants connected", func() (bool, string) {
			live := liveTenants(c, tenants)
			conns := f.conns()
			total = sum(conns)
			connected := slices.Sorted(maps.Keys(conns))
			msg := fmt.Sprintf("cached tenants %v; tenants with connections %v (%v)", live, connected, conns)
			if len(live) > maxEntries {
				return false, msg
			}
			for _, n := range conns {
				if n > poolSize {
					return false, msg
				}
			}
			return slices.Equal(live, connected), msg
		})
		return total
	}

	// Sequential: every tenant in turn, twice, each call one SET.
	maxSettled := 0
	for round := range 2 {
		for tenant := range tenants {
			rc, err := c.Get(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if err := rc.Set(ctx, f.key(round), tenant, 0).Err(); err != nil {
				t.Fatalf("tenant %d: SET: %v", tenant, err)
			}
			maxSettled = max(maxSettled, settled(fmt.Sprintf("round %d, tenant %d", round, tenant)))
		}
	}
	t.Logf("sequential, %d tenant switches, %d evictions: at most %d connections after each switch (%s)",
		2*tenants, evictions.Load(), maxSettled, serverKind(f))
	if maxSettled > maxEntries*poolSize {
		t.Errorf("%d connections after a switch; want at most %d", maxSettled, maxEntries*poolSize)
	}

	// Concurrent: workers lease random tenants while a sampler counts the
	// server's connections. At most maxEntries cached clients and one leased
	// client per worker are open, each with at most poolSize connections.
	bound := (maxEntries + workers) * poolSize
	stop := make(chan struct{})
	var peak, samples atomic.Int64
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := int64(sum(f.conns()))
			samples.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
		}
	}()
	var wg sync.WaitGroup
	var ops atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for range 60 {
				tenant := rng.IntN(tenants)
				l, err := c.Lease(ctx, tenant)
				if err != nil {
					errs <- err
					return
				}
				err = l.Value().Incr(ctx, f.key("ops")).Err()
				l.Release()
				if err != nil {
					errs <- fmt.Errorf("tenant %d: INCR: %w", tenant, err)
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampler
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	final := settled("after the concurrent phase")
	t.Logf("concurrent, %d workers, %d leased calls, %d evictions in all: peak %d connections over %d samples (bound %d); %d after settling",
		workers, ops.Load(), evictions.Load(), peak.Load(), samples.Load(), bound, final)
	if p := int(peak.Load()); p > bound {
		t.Errorf("peak of %d server connections; want at most %d", p, bound)
	}

	// Close: every connection leaves.
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitFor(t, 5*time.Second, "no connections after Close", func() (bool, string) {
		conns := f.conns()
		return len(conns) == 0, fmt.Sprint(conns)
	})
}

// watchConn is a net.Conn that reports when a write carries a marker.
type watchConn struct {
	net.Conn
	marker []byte
	seen   func()
}

func (c *watchConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && strings.Contains(strings.ToLower(string(b)), string(c.marker)) {
		c.seen()
	}
	return n, err
}

// Test 4 of the issue: a lease held across an eviction keeps the client
// open; the command in flight completes; the client closes at release.
func TestLeaseHeldAcrossEviction(t *testing.T) {
	f := newFleet(t, 2, true)
	inFlight := make(chan struct{})
	var once sync.Once
	closed := make(chan int, 4)
	evicted := make(chan rescache.EvictReason, 4)
	c := newCache(t, redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			o := f.options(tenant)
			if tenant == 0 {
				o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return &watchConn{Conn: conn, marker: []byte("blpop"), seen: func() { once.Do(func() { close(inFlight) }) }}, nil
				}
			}
			return o, nil
		},
		Cache: rescache.Options[int, *redis.Client]{
			MaxEntries: 1,
			Close: func(tenant int, rc *redis.Client) error {
				closed <- tenant
				return rc.Close()
			},
			OnEvict: func(tenant int, _ *redis.Client, reason rescache.EvictReason) {
				if tenant == 0 {
					evicted <- reason
				}
			},
		},
	})
	ctx := context.Background()

	l, err := c.Lease(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc := l.Value()
	list := f.key("list")
	type popResult struct {
		vals []string
		err  error
	}
	popped := make(chan popResult, 1)
	go func() {
		vals, err := rc.BLPop(ctx, 10*time.Second, list).Result()
		popped <- popResult{vals, err}
	}()
	select {
	case <-inFlight:
	case <-time.After(5 * time.Second):
		t.Fatal("BLPOP was not sent within 5s")
	}

	// Tenant 1 takes the only slot: tenant 0 is evicted while leased.
	if _, err := c.Get(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-evicted:
		if r != rescache.EvictCapacity {
			t.Errorf("tenant 0 evicted with reason %v; want %v", r, rescache.EvictCapacity)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tenant 0 was not evicted within 5s")
	}
	if _, ok := c.Peek(0); ok {
		t.Error("Peek(0) found the evicted tenant")
	}

	// The BLPOP in flight completes with what another client pushes.
	po := f.options(0)
	po.ClientName = "" // not one of tenant 0's connections
	pusher := redis.NewClient(po)
	err = pusher.RPush(ctx, list, "hello").Err()
	pusher.Close()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-popped:
		if r.err != nil || len(r.vals) != 2 || r.vals[1] != "hello" {
			t.Fatalf("BLPOP on the evicted, leased client = %q, %v; want [%s hello], nil", r.vals, r.err, list)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("BLPOP did not return within 5s of RPUSH")
	}
	select {
	case tenant := <-closed:
		t.Fatalf("client of tenant %d closed while leased", tenant)
	default:
	}
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING on the evicted, leased client: %v", err)
	}

	copied := l
	l.Release()
	copied.Release() // idempotent across copies
	select {
	case tenant := <-closed:
		if tenant != 0 {
			t.Fatalf("closed tenant %d; want 0", tenant)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed within 5s of release")
	}
	if err := rc.Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("PING after release = %v; want %v", err, redis.ErrClosed)
	}
	waitFor(t, 5*time.Second, "tenant 0's connections to leave the server", func() (bool, string) {
		conns := f.conns()
		return conns[0] == 0, fmt.Sprint(conns)
	})
	select {
	case tenant := <-closed:
		t.Errorf("tenant %d closed twice", tenant)
	default:
	}
}
