package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
	"go.uber.org/goleak"
)

// Test 3 of the issue, and the Redis case of issue 5: a redis-server owned
// by the test is killed under load and started again on the same port.
// Calls fail with clear errors, the health check evicts the idle clients,
// every tenant serves again after the restart, and neither connections nor
// goroutines are left behind.
//
// Tenant 0's caller invalidates its client on an error, tenant 1's keeps it
// (go-redis reconnects by itself), and tenants 2 and 3 are idle, left to the
// health check.
func TestServerKilledAndRestarted(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	srv := startRedisServer(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialerRetries: 1})
	defer admin.Close()
	const tenants = 4
	prefix := runID + "-" + shortName(t)
	name := func(tenant int) string { return prefix + "-t" + strconv.Itoa(tenant) }

	var mu sync.Mutex
	evictions := make(map[int][]rescache.EvictReason)
	c, err := redisadapter.New(redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			return &redis.Options{
				Addr: srv.addr(), DB: tenant, ClientName: name(tenant),
				// Fail fast while the server is down: one dial, no retries.
				MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second,
				ReadTimeout: time.Second, PoolSize: 4,
			}, nil
		},
		PingTimeout: time.Second,
		HealthCheck: true,
		Cache: rescache.Options[int, *redis.Client]{
			HealthCheckInterval: 50 * time.Millisecond,
			HealthCheckTimeout:  500 * time.Millisecond,
			OnEvict: func(tenant int, _ *redis.Client, r rescache.EvictReason) {
				mu.Lock()
				evictions[tenant] = append(evictions[tenant], r)
				mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for tenant := range tenants {
		rc, err := c.Get(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Set(ctx, prefix+":owner", tenant, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Two callers, on tenants 0 and 1, run until the end of the test.
	type caller struct {
		ok, failed atomic.Int64
		mu         sync.Mutex // protects errs
		errs       map[string]int
	}
	callers := [2]*caller{{errs: map[string]int{}}, {errs: map[string]int{}}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for tenant, cl := range callers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := func() error {
					rc, err := c.Get(ctx, tenant)
					if err != nil {
						return err
					}
					if err := rc.Incr(ctx, prefix+":calls").Err(); err != nil {
						if tenant == 0 {
							c.Invalidate(tenant)
						}
						return fmt.Errorf("tenant %d: INCR: %w", tenant, err)
					}
					return nil
				}()
				if err == nil {
					cl.ok.Add(1)
					continue
				}
				cl.failed.Add(1)
				cl.mu.Lock()
				cl.errs[errClass(tenant, err)]++
				cl.mu.Unlock()
				time.Sleep(5 * time.Millisecond) // pace the retries of a caller that sees the server down
			}
		})
	}
	stopCallers := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopCallers()
	waitFor(t, 5*time.Second, "both callers to succeed", func() (bool, string) {
		return callers[0].ok.Load() >= 20 && callers[1].ok.Load() >= 20, ""
	})

	// Kill the server.
	killedAt := time.Now()
	srv.kill()
	okAtKill := [2]int64{callers[0].ok.Load(), callers[1].ok.Load()}
	waitFor(t, 5*time.Second, "both callers to fail and tenants 2 and 3 to be evicted as unhealthy", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		msg := fmt.Sprintf("failures %d, %d; evictions %v", callers[0].failed.Load(), callers[1].failed.Load(), evictions)
		return callers[0].failed.Load() >= 5 && callers[1].failed.Load() >= 5 &&
			hasReason(evictions[2], rescache.EvictUnhealthy) && hasReason(evictions[3], rescache.EvictUnhealthy), msg
	})
	down := time.Since(killedAt)
	for tenant := 2; tenant < tenants; tenant++ {
		if _, ok := c.Peek(tenant); ok {
			t.Errorf("tenant %d still cached after its unhealthy eviction", tenant)
		}
	}

	// Start it again on the same port.
	srv.start()
	restartedAt := time.Now()
	waitFor(t, 10*time.Second, "both callers to succeed again", func() (bool, string) {
		return callers[0].ok.Load() >= okAtKill[0]+20 && callers[1].ok.Load() >= okAtKill[1]+20,
			fmt.Sprintf("successes since the kill: %d, %d", callers[0].ok.Load()-okAtKill[0], callers[1].ok.Load()-okAtKill[1])
	})
	for tenant := range tenants {
		rc, err := c.Get(ctx, tenant)
		if err != nil {
			t.Fatalf("tenant %d after the restart: %v", tenant, err)
		}
		if err := rc.Set(ctx, prefix+":owner", tenant, 0).Err(); err != nil {
			t.Fatalf("tenant %d after the restart: SET: %v", tenant, err)
		}
	}
	back := time.Since(restartedAt)
	stopCallers()

	for i, cl := range callers {
		cl.mu.Lock()
		t.Logf("tenant %d: %d calls succeeded, %d failed; errors by kind: %v", i, cl.ok.Load(), cl.failed.Load(), cl.errs)
		for kind := range cl.errs {
			if strings.HasPrefix(kind, "unexpected") {
				t.Errorf("tenant %d: %s", i, kind)
			}
		}
		cl.mu.Unlock()
	}
	mu.Lock()
	t.Logf("evictions: %v; Stats: %+v", evictions, c.Stats())
	t.Logf("down for %v before every failure was seen; every tenant served %v after the restart", down.Round(time.Millisecond), back.Round(time.Millisecond))
	mu.Unlock()

	// Server side: only the live clients' connections, then none.
	conns := func() map[string]int {
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatalf("CLIENT LIST: %v", err)
		}
		m := make(map[string]int)
		for _, n := range clientNames(list) {
			if strings.HasPrefix(n, prefix) {
				m[n]++
			}
		}
		return m
	}
	seen := conns()
	t.Logf("connections after the restart: %v", seen)
	for n, count := range seen {
		if count > 4 {
			t.Errorf("%s has %d connections; PoolSize is 4", n, count)
		}
	}
	shutdown(t, c)
	waitFor(t, 5*time.Second, "no connections after Shutdown", func() (bool, string) {
		m := conns()
		return len(m) == 0, fmt.Sprint(m)
	})
	admin.Close()
	srv.kill()
	verifyNoLeaks(t, leaks)
}

func hasReason(rs []rescache.EvictReason, r rescache.EvictReason) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// errClass sorts an error a caller saw while the server was down into a
// kind, and checks that it is clear: a build error names the tenant and says
// the connection was refused, a command error says the connection broke.
func errClass(tenant int, err error) string {
	var be *redisadapter.BuildError
	if errors.As(err, &be) {
		if be.Tenant != strconv.Itoa(tenant) || !strings.Contains(err.Error(), "connection refused") {
			return "unexpected build error: " + err.Error()
		}
		return "build: connection refused"
	}
	msg := err.Error()
	if errors.Is(err, redis.ErrClosed) {
		// A client from Get that an eviction closed: documented.
		return "command: client closed by an eviction"
	}
	for _, kind := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "i/o timeout"} {
		if strings.Contains(msg, kind) {
			return "command: " + kind
		}
	}
	return "unexpected error: " + msg
}
