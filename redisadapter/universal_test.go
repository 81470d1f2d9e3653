package redisadapter_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
)

func newUniversalCache(t *testing.T, opts redisadapter.UniversalOptions[int]) *rescache.Cache[int, redis.UniversalClient] {
	t.Helper()
	c, err := redisadapter.NewUniversal(opts)
	if err != nil {
		t.Fatalf("NewUniversal: %v", err)
	}
	t.Cleanup(func() { shutdown(t, c) })
	return c
}

// NewUniversal with one address gives a single-node client per tenant, each
// on its own database.
func TestUniversalSingleNode(t *testing.T) {
	const tenants, keys = 4, 16
	f := newFleet(t, tenants, false)
	c := newUniversalCache(t, redisadapter.UniversalOptions[int]{
		Client: func(ctx context.Context, tenant int) (*redis.UniversalOptions, error) {
			o := f.options(tenant)
			return &redis.UniversalOptions{Addrs: []string{o.Addr}, DB: o.DB, ClientName: o.ClientName}, nil
		},
	})
	ctx := context.Background()
	for tenant := range tenants {
		uc, err := c.Get(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := uc.(*redis.Client); !ok {
			t.Fatalf("tenant %d: client is a %T; want *redis.Client", tenant, uc)
		}
		for k := range keys {
			if err := uc.Set(ctx, f.key(k), tenant, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for tenant := range tenants {
		uc, _ := c.Get(ctx, tenant)
		for k := range keys {
			if got, err := uc.Get(ctx, f.key(k)).Result(); err != nil || got != strconv.Itoa(tenant) {
				t.Errorf("tenant %d: GET %s = %q, %v; want %q", tenant, f.key(k), got, err, strconv.Itoa(tenant))
			}
		}
	}
}

// NewUniversal against a real Redis Cluster (RESCACHE_REDIS_CLUSTER_ADDRS;
// testdata/cluster.sh starts one): one cluster client per tenant, tenants
// isolated by key prefix, their keys spread over the masters and read back.
func TestUniversalCluster(t *testing.T) {
	env := os.Getenv(envClusterAddrs)
	if env == "" {
		t.Skipf("%s is not set; start a cluster with testdata/cluster.sh start and set it to 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", envClusterAddrs)
	}
	addrs := strings.Split(env, ",")
	ctx := context.Background()
	masters := clusterMasters(t, addrs)

	const tenants, keys, calls = 6, 48, 240
	prefix := runID + "-" + shortName(t)
	name := func(tenant int) string { return prefix + "-t" + strconv.Itoa(tenant) }
	key := func(tenant, k int) string { return fmt.Sprintf("%s:t%d:k%d", prefix, tenant, k) }
	c := newUniversalCache(t, redisadapter.UniversalOptions[int]{
		Client: func(ctx context.Context, tenant int) (*redis.UniversalOptions, error) {
			return &redis.UniversalOptions{Addrs: addrs, ClientName: name(tenant)}, nil
		},
	})
	t.Cleanup(func() { deleteClusterKeys(t, addrs, prefix) })

	// Concurrent calls write every tenant's keys.
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range calls {
		wg.Go(func() {
			tenant := i % tenants
			uc, err := c.Get(ctx, tenant)
			if err != nil {
				errs <- err
				return
			}
			for k := i / tenants; k < keys; k += calls / tenants {
				if err := uc.Set(ctx, key(tenant, k), tenant, 0).Err(); err != nil {
					errs <- fmt.Errorf("tenant %d: SET %s: %w", tenant, key(tenant, k), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Builds != tenants {
		t.Errorf("Stats.Builds = %d; want %d", s.Builds, tenants)
	}

	for tenant := range tenants {
		uc, err := c.Get(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		cc, ok := uc.(*redis.ClusterClient)
		if !ok {
			t.Fatalf("tenant %d: client is a %T; want *redis.ClusterClient", tenant, uc)
		}
		// Read back, and see where each key lives.
		perMaster := make(map[string]int)
		for k := range keys {
			if got, err := cc.Get(ctx, key(tenant, k)).Result(); err != nil || got != strconv.Itoa(tenant) {
				t.Errorf("tenant %d: GET %s = %q, %v; want %q", tenant, key(tenant, k), got, err, strconv.Itoa(tenant))
			}
			m, err := cc.MasterForKey(ctx, key(tenant, k))
			if err != nil {
				t.Fatal(err)
			}
			perMaster[m.Options().Addr]++
		}
		if len(perMaster) != len(masters) {
			t.Errorf("tenant %d: %d keys on %d of %d masters (%v)", tenant, keys, len(perMaster), len(masters), perMaster)
		}
		// Each master holds exactly the keys of this tenant's prefix that
		// the slot map gives it: nothing more, nothing less.
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			n, err := countKeys(ctx, m, fmt.Sprintf("%s:t%d:*", prefix, tenant))
			if err != nil {
				return err
			}
			if want := perMaster[m.Options().Addr]; n != want {
				return fmt.Errorf("master %s holds %d keys of tenant %d; want %d", m.Options().Addr, n, tenant, want)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if tenant == 0 {
			t.Logf("cluster masters %v; tenant 0's %d keys per master: %v", masters, keys, perMaster)
		}
	}
	t.Logf("%d tenants x %d keys over %d masters in %v", tenants, keys, len(masters), time.Since(began).Round(time.Millisecond))

	// Closing the cache closes every tenant's connections on every node.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "no tenant connections on any node after Close", func() (bool, string) {
		m := clusterConns(t, addrs, prefix)
		return len(m) == 0, fmt.Sprint(m)
	})
}

// clusterMasters returns the sorted master addresses of the cluster at
// addrs, failing t if it does not answer or is not ok.
func clusterMasters(t *testing.T, addrs []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1, DialerRetries: 1})
	defer cc.Close()
	info, err := cc.ClusterInfo(ctx).Result()
	if err != nil {
		t.Fatalf("%s=%s is set but the cluster does not answer: %v", envClusterAddrs, strings.Join(addrs, ","), err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		t.Fatalf("%s=%s: cluster state is not ok:\n%s", envClusterAddrs, strings.Join(addrs, ","), info)
	}
	//lint:ignore SA1019 CLUSTER SLOTS still answers on Redis 7 and also works on Redis 6, which has no CLUSTER SHARDS
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var masters []string
	for _, s := range slots {
		if len(s.Nodes) > 0 && !slices.Contains(masters, s.Nodes[0].Addr) {
			masters = append(masters, s.Nodes[0].Addr)
		}
	}
	slices.Sort(masters)
	return masters
}

func countKeys(ctx context.Context, c *redis.Client, pattern string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

// clusterConns counts, over every node at addrs, the connections whose
// client name starts with prefix.
func clusterConns(t *testing.T, addrs []string, prefix string) map[string]int {
	t.Helper()
	m := make(map[string]int)
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
		list, err := c.ClientList(context.Background()).Result()
		c.Close()
		if err != nil {
			t.Fatalf("CLIENT LIST on %s: %v", addr, err)
		}
		for _, n := range clientNames(list) {
			if strings.HasPrefix(n, prefix) {
				m[addr+" "+n]++
			}
		}
	}
	return m
}

func deleteClusterKeys(t *testing.T, addrs []string, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := m.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	})
	if err != nil {
		t.Errorf("deleting the test's keys: %v", err)
	}
}
