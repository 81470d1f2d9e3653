package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/rescache/rescache/redisadapter"
)

// budgetConns counts the server-side connections of f's tenants: from
// CLIENT LIST on a real server, from the shared miniredis otherwise.
func budgetConns(t *testing.T, f *fleet) int {
	t.Helper()
	if f.real {
		return sum(f.conns())
	}
	return f.minis[0].CurrentConnectionCount()
}

// samplePeak samples budgetConns every 20ms until the returned function is
// called, which returns the highest count seen.
func samplePeak(t *testing.T, f *fleet) (stop func() int) {
	done := make(chan struct{})
	var peak atomic.Int64
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if n := int64(budgetConns(t, f)); n > peak.Load() {
				peak.Store(n)
			}
		}
	})
	return func() int {
		close(done)
		sampler.Wait()
		return int(peak.Load())
	}
}

// 500 tenants with go-redis's default pool sizes, 32 of them in flight at
// a time, share a budget of 32 connections: the server never shows more
// than 32 connections of the cache, and no command fails. Against the
// server of RESCACHE_REDIS_ADDR (counted with CLIENT LIST and the tenants'
// client names), else miniredis.
func TestBudget500Tenants(t *testing.T) {
	const tenants, budget, workers = 500, 32, 32
	f := newFleet(t, tenants, false)
	c, err := redisadapter.New(redisadapter.Options[int]{
		Client: func(_ context.Context, tenant int) (*redis.Options, error) {
			return f.options(tenant), nil
		},
		MaxTotalConns: budget,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	stopSampling := samplePeak(t, f)

	ctx := context.Background()
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for tenant := w; tenant < tenants; tenant += workers {
				client, err := c.Get(ctx, tenant)
				if err == nil {
					for i := range 4 {
						if err = client.Incr(ctx, f.key(tenant)).Err(); err != nil {
							break
						}
						if i == 3 {
							var n int
							n, err = client.Get(ctx, f.key(tenant)).Int()
							if err == nil && n != 4 {
								err = fmt.Errorf("GET = %d; want 4", n)
							}
						}
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("tenant %d: %w", tenant, err))
				}
			}
		})
	}
	wg.Wait()
	peak := stopSampling()
	st := redisadapter.PoolBudget(c)
	t.Logf("budget %+v; peak server connections %d (real server: %v)", st, peak, f.real)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d tenants saw a command fail; first: %v", n, tenants, firstErr.Load())
	}
	if p := peak; p > budget {
		t.Errorf("the server showed %d connections of the cache at once; want at most %d", p, budget)
	}
	if st.Held > budget || st.WaitCount == 0 || st.Reclaimed == 0 {
		t.Errorf("PoolBudget = %+v; want Held <= %d and reclaims (500 tenants keep idle connections)", st, budget)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "nothing held after Close", func() (bool, string) {
		st := redisadapter.PoolBudget(c)
		return st.Held == 0, fmt.Sprintf("%+v", st)
	})
	waitFor(t, 5*time.Second, "no connection of the cache", func() (bool, string) {
		n := budgetConns(t, f)
		return n == 0, fmt.Sprintf("%d connections", n)
	})
}

// A command whose dial waits for the budget until its context ends fails
// with ErrBudgetWait and the context's error; nothing is left running.
func TestBudgetWaiterContextEnds(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	// Registered first, so it runs after the fleet's cleanup stops its
	// servers.
	t.Cleanup(func() { verifyNoLeaks(t, leaks) })
	f := newFleet(t, 2, false)
	c, err := redisadapter.New(redisadapter.Options[int]{
		Client: func(_ context.Context, tenant int) (*redis.Options, error) {
			return f.options(tenant), nil
		},
		MaxTotalConns: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	idle, err := c.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := c.Get(ctx, 0) // takes tenant 1's idle connection back
	if err != nil {
		t.Fatal(err)
	}
	// Tenant 0 holds the budget's only connection in a blocking command.
	blpop := make(chan error, 1)
	go func() { blpop <- busy.BLPop(ctx, 0, f.key("list")).Err() }()
	waitFor(t, 5*time.Second, "BLPOP to block", func() (bool, string) {
		st := redisadapter.PoolBudget(c)
		return st.Held == 1 && redisadapter.PoolBudget(c).Reclaimed == 1, fmt.Sprintf("%+v", st)
	})

	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = idle.Ping(qctx).Err()
	cancel()
	if !errors.Is(err, redisadapter.ErrBudgetWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PING with the budget held = %v; want ErrBudgetWait and DeadlineExceeded", err)
	}
	if err != nil && !strings.Contains(err.Error(), "MaxTotalConns") {
		t.Errorf("error %q does not name the budget", err)
	}

	// Unblock BLPOP through the other tenant's client: its dial waits for
	// the connection BLPOP frees.
	push := redis.NewClient(&redis.Options{Addr: f.options(0).Addr, DB: f.options(0).DB})
	defer push.Close()
	if err := push.RPush(ctx, f.key("list"), "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-blpop; err != nil {
		t.Fatalf("BLPOP: %v", err)
	}
	if err := idle.Ping(ctx).Err(); err != nil {
		t.Errorf("PING once the connection is idle: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// go-redis ends a background dial a moment after Close.
	waitFor(t, 5*time.Second, "nothing held or waiting after Close", func() (bool, string) {
		st := redisadapter.PoolBudget(c)
		return st.Held == 0 && st.Waiting == 0, fmt.Sprintf("%+v", st)
	})
}

// NewUniversal on a Redis Cluster: the connections to every node of every
// tenant's cluster client count in the budget.
func TestBudgetUniversalCluster(t *testing.T) {
	env := os.Getenv(envClusterAddrs)
	if env == "" {
		t.Skipf("%s is not set; start a cluster with testdata/cluster.sh start", envClusterAddrs)
	}
	addrs := strings.Split(env, ",")
	const tenants, budget = 12, 24
	prefix := runID + "-" + shortName(t)
	c, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{
		Client: func(_ context.Context, tenant int) (*redis.UniversalOptions, error) {
			return &redis.UniversalOptions{Addrs: addrs, ClientName: fmt.Sprintf("%s-t%d", prefix, tenant)}, nil
		},
		MaxTotalConns: budget,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Cleanup(func() { deleteClusterKeys(t, addrs, prefix) })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, tenants*4)
	for w := range tenants * 4 {
		wg.Go(func() {
			tenant := w % tenants
			uc, err := c.Get(ctx, tenant)
			if err == nil {
				err = uc.Set(ctx, fmt.Sprintf("%s:t%d:%d", prefix, tenant, w), w, 0).Err()
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	for _, a := range addrs {
		admin := redis.NewClient(&redis.Options{Addr: a})
		list, err := admin.ClientList(ctx).Result()
		admin.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range clientNames(list) {
			if strings.HasPrefix(name, prefix+"-t") {
				n++
			}
		}
	}
	if n > budget {
		t.Errorf("the cluster's nodes show %d connections of the cache; want at most %d", n, budget)
	}
	if st := redisadapter.PoolBudget(c); st.Held > budget {
		t.Errorf("Held = %d; want at most %d", st.Held, budget)
	}
}
