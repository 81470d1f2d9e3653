package redisadapter_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/budget/redisbudget"
	"github.com/rescache/rescache/redisadapter"
)

// Three caches stand for three processes of a fleet, each with its own
// fleet budget (redisbudget, one instance each) of 12 connections in all:
// 300 tenants, 8 callers per process, every tenant served by two of the
// processes. The server never shows more than 12 connections of the
// tenants (CLIENT LIST on the server of RESCACHE_REDIS_ADDR, which also
// coordinates the budget; miniredis otherwise, with a second miniredis to
// coordinate), no command fails, and every process gets connections.
func TestFleetBudgetAcrossCaches(t *testing.T) {
	const tenants, max, procs, workers = 300, 12, 3, 8
	f := newFleet(t, tenants, false)
	coord := os.Getenv(envAddr)
	if coord == "" {
		coord = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: coord, MaxRetries: -1})
	defer rdb.Close()
	name := f.prefix + "-fleet"

	var caches []*rescache.Cache[int, *redis.Client]
	var budgets []*redisbudget.Budget
	for p := range procs {
		b, err := redisbudget.New(redisbudget.Options{Client: rdb, Name: name, Max: max, LocalMax: max / procs, Instance: fmt.Sprint("p", p)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		c, err := redisadapter.New(redisadapter.Options[int]{
			Client: func(_ context.Context, tenant int) (*redis.Options, error) {
				return f.options(tenant), nil
			},
			Budget: b,
			// The build's ping waits for a place of the budget: bound it
			// by the callers' own deadline, not the default 5 s, which a
			// loaded machine (CI runs every module's tests at once,
			// with -race) exceeded in 4 of 600 builds while every place
			// was busy. A process left waiting 20 s still fails the test.
			PingTimeout: 20 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		caches, budgets = append(caches, c), append(budgets, b)
	}

	stopSampling := samplePeak(t, f)

	ctx := context.Background()
	var failed atomic.Int64
	var firstErr atomic.Value
	served := make([]atomic.Int64, procs)
	var wg sync.WaitGroup
	for p, c := range caches {
		for w := range workers {
			wg.Go(func() {
				// Process p serves the tenants t with t%3 != p: each
				// tenant is served by two processes.
				for tenant := w; tenant < tenants; tenant += workers {
					if tenant%procs == p {
						continue
					}
					cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					client, err := c.Get(cctx, tenant)
					if err == nil {
						err = client.Incr(cctx, f.key(tenant)).Err()
					}
					cancel()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Errorf("process %d, tenant %d: %w", p, tenant, err))
						continue
					}
					served[p].Add(1)
				}
			})
		}
	}
	wg.Wait()
	peak := stopSampling()
	for p, b := range budgets {
		t.Logf("process %d: served %d tenants; budget %+v", p, served[p].Load(), b.Stats())
	}
	t.Logf("peak server connections of the tenants %d (fleet budget %d; real server: %v)", peak, max, f.real)
	if n := failed.Load(); n > 0 {
		t.Errorf("%d commands failed; first: %v", n, firstErr.Load())
	}
	if p := peak; p > max {
		t.Errorf("the server showed %d connections of the tenants at once; the fleet budget is %d", p, max)
	}
	for tenant := range tenants {
		o := f.options(tenant)
		o.ClientName = f.prefix + "-check" // not one of the tenants' connections
		check := redis.NewClient(o)
		n, err := check.Get(ctx, f.key(tenant)).Int()
		check.Close()
		if err != nil || n != 2 {
			t.Errorf("tenant %d: its counter is %d (%v); want 2, one INCR from each of its two processes", tenant, n, err)
			break
		}
	}
	for _, c := range caches {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "no connection of the tenants after Close", func() (bool, string) {
		n := budgetConns(t, f)
		return n == 0, fmt.Sprintf("%d connections", n)
	})
	for p, b := range budgets {
		if s := b.Stats(); s.Held != 0 {
			t.Errorf("process %d holds %d places after its cache's Close", p, s.Held)
		}
	}
}
