package rescache

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of health checks run by the janitor.

func TestHealthCheckEvictsUnhealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var healthy atomic.Bool
		healthy.Store(true)
		c := newTestCache(t, b.build, &Options[string, *resource]{
			HealthCheck: func(ctx context.Context, key string, v *resource) error {
				if v.closed() {
					return errors.New("checked a closed value")
				}
				if !healthy.Load() {
					return errors.New("server gone")
				}
				return nil
			},
			HealthCheckInterval: 10 * time.Second,
		})
		v := mustGet(t, c, "k")
		time.Sleep(35 * time.Second)
		if s := c.Stats(); s.HealthChecks == 0 || s.HealthCheckErrors != 0 {
			t.Fatalf("Stats = %+v; want passing checks", s)
		}
		healthy.Store(false)
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if _, ok := c.Peek("k"); ok {
			t.Fatal("unhealthy entry still cached")
		}
		if !v.closed() {
			t.Fatal("unhealthy value not closed")
		}
		if s := c.Stats(); s.EvictionsByReason[EvictUnhealthy] != 1 {
			t.Errorf("unhealthy evictions = %d; want 1", s.EvictionsByReason[EvictUnhealthy])
		}
		healthy.Store(true)
		if mustGet(t, c, "k") == v {
			t.Fatal("the unhealthy value was served again")
		}
	})
}

// Health checks take a free build slot and never queue for one: while a
// build holds the only slot, no check runs.
func TestHealthChecksTakeFreeSlotsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		var checks atomic.Int32
		c := newTestCache(t, func(_ context.Context, key string) (string, error) {
			if key == "slow" {
				<-hold
			}
			return key, nil
		}, &Options[string, string]{
			MaxConcurrentBuilds: 1,
			HealthCheckInterval: time.Second,
			HealthCheck: func(context.Context, string, string) error {
				checks.Add(1)
				return nil
			},
		})
		mustGet(t, c, "k")
		go c.Get(context.Background(), "slow") // holds the slot
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n != 0 {
			t.Errorf("%d health checks ran while a build held the only slot; want 0", n)
		}
		close(hold)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n == 0 {
			t.Errorf("no health check ran once the slot was free")
		}
	})
}

// A leased entry is not checked, whichever count holds its lease (a lease
// of a found key is counted in its P's slot, not in the entry's word).
func TestHealthCheckSkipsLeasedEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		var checks atomic.Int32
		c := newTestCache(t, b.build, &Options[string, *resource]{
			HealthCheckInterval: 10 * time.Second,
			HealthCheck: func(context.Context, string, *resource) error {
				checks.Add(1)
				return nil
			},
		})
		mustGet(t, c, "k")
		l, err := c.Lease(context.Background(), "k") // a hit
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(35 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n != 0 {
			t.Fatalf("%d health checks ran on a leased entry; want 0", n)
		}
		l.Release()
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if n := checks.Load(); n == 0 {
			t.Fatal("no health check ran once the lease was released")
		}
	})
}

// A health check's internal hold does not keep an idle entry alive.
func TestHealthCheckDoesNotHideIdleExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c := newTestCache(t, b.build, &Options[string, *resource]{
			IdleTimeout:         time.Second,
			HealthCheckInterval: 400 * time.Millisecond,
			HealthCheck: func(ctx context.Context, _ string, _ *resource) error {
				time.Sleep(3 * time.Second)
				return nil
			},
			HealthCheckTimeout: 10 * time.Second,
		})
		mustGet(t, c, "k")
		time.Sleep(1500 * time.Millisecond) // a check runs since about 400-500 ms
		if _, ok := c.Peek("k"); ok {
			t.Errorf("Peek(k) found an entry unused for 1.5s with IdleTimeout 1s")
		}
		if r := mustGet(t, c, "k"); r.gen != 2 {
			t.Errorf("Get(k) after 1.5s idle returned build #%d; want a new build", r.gen)
		}
	})
}
