package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
)

// Each tenant is a database number on one server; the cache holds one
// client.
func ExampleNew() {
	server, err := miniredis.Run() // an in-process Redis server
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	tenants, err := redisadapter.New(redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			return &redis.Options{Addr: server.Addr(), DB: tenant}, nil
		},
		Cache: rescache.Options[int, *redis.Client]{
			MaxEntries: 1,
			OnEvict: func(tenant int, _ *redis.Client, reason rescache.EvictReason) {
				fmt.Printf("tenant %d's client leaves the cache (%v) and is closed\n", tenant, reason)
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx := context.Background()
	for _, tenant := range []int{1, 1, 2} {
		rdb, err := tenants.Get(ctx, tenant)
		if err != nil {
			log.Fatal(err)
		}
		n, err := rdb.Incr(ctx, "visits").Result()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("tenant %d: visits = %d\n", tenant, n)
	}
	s := tenants.Stats()
	fmt.Printf("%d clients built, %d cached\n", s.Builds, s.Entries)
	// Output:
	// tenant 1: visits = 1
	// tenant 1: visits = 2
	// tenant 1's client leaves the cache (capacity) and is closed
	// tenant 2: visits = 1
	// 2 clients built, 1 cached
	// tenant 2's client leaves the cache (closed) and is closed
}

// A lease keeps a tenant's client open for a pipeline, even if the tenant is
// evicted meanwhile.
func ExampleNew_acquire() {
	server, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	tenants, err := redisadapter.New(redisadapter.Options[string]{
		Client: func(ctx context.Context, tenant string) (*redis.Options, error) {
			return &redis.Options{Addr: server.Addr()}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx := context.Background()
	l, err := tenants.Lease(ctx, "acme")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release()
	cmds, err := l.Value().TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, "acme:user:1", "name", "Ada")
		p.HGet(ctx, "acme:user:1", "name")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cmds[1].(*redis.StringCmd).Val())
	// Output: Ada
}

// A build that fails names the tenant; nothing is cached for it.
func ExampleBuildError() {
	errUnknown := errors.New("unknown tenant")
	tenants, err := redisadapter.New(redisadapter.Options[string]{
		Client: func(ctx context.Context, tenant string) (*redis.Options, error) {
			if tenant == "acme" {
				return &redis.Options{Addr: "redis://acme:hunter2@10.0.0.7:6379"}, nil
			}
			return nil, errUnknown
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx := context.Background()
	_, err = tenants.Get(ctx, "globex")
	fmt.Println(err)
	fmt.Println(errors.Is(err, errUnknown))

	_, err = tenants.Get(ctx, "acme")
	var be *redisadapter.BuildError
	if errors.As(err, &be) {
		fmt.Println(be.Tenant, errors.Is(err, redisadapter.ErrInvalidAddr))
	}
	fmt.Println(err)
	fmt.Println(tenants.Len())
	// Output:
	// redisadapter: tenant "globex": unknown tenant
	// true
	// acme true
	// redisadapter: tenant "acme": invalid address "redis://acme:xxxxx@10.0.0.7:6379": a URL, not host:port (parse URLs with redis.ParseURL)
	// 0
}

// Tenants on a Redis Cluster share its one database: give each a key
// prefix. With one address, as here, NewUniversal makes a single-node
// client.
func ExampleNewUniversal() {
	server, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	tenants, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[string]{
		Client: func(ctx context.Context, tenant string) (*redis.UniversalOptions, error) {
			// For a cluster: Addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}.
			return &redis.UniversalOptions{Addrs: []string{server.Addr()}, ClientName: "tenant-" + tenant}, nil
		},
		HealthCheck: true, // PING idle clients every 30s, evict those that fail
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex"} {
		rdb, err := tenants.Get(ctx, tenant)
		if err != nil {
			log.Fatal(err)
		}
		rdb.Set(ctx, tenant+":plan", "gold", 0)
		fmt.Println(tenant, rdb.Get(ctx, tenant+":plan").Val())
	}
	// Output:
	// acme gold
	// globex gold
}

// Two instances share a Redis: when a tenant's credentials change, one of
// them announces it and every instance that follows the channel rebuilds
// that tenant's value in the background.
func ExampleFollow() {
	server, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	// The secret each build reads; a build of tenant "acme" returns the
	// password it used.
	var secrets sync.Map
	secrets.Store("acme", "old-password")
	tenants, err := rescache.New(func(_ context.Context, tenant string) (string, error) {
		p, _ := secrets.Load(tenant)
		return p.(string), nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tenants.Close()

	ctx, stop := context.WithCancel(context.Background())
	follower := redis.NewClient(&redis.Options{Addr: server.Addr()})
	defer follower.Close()
	parse := func(s string) (string, error) { return s, nil }
	done := make(chan error, 1)
	go func() { done <- redisadapter.Follow(ctx, follower, "tenants", tenants, parse) }()

	p, _ := tenants.Get(ctx, "acme")
	fmt.Println("before:", p)

	// Another instance, with a client of its own, rotates the password.
	other := redis.NewClient(&redis.Options{Addr: server.Addr()})
	defer other.Close()
	waitUntil(func() bool { // Follow has subscribed
		n, _ := other.PubSubNumSub(ctx, "tenants").Result()
		return n["tenants"] == 1
	})
	secrets.Store("acme", "new-password")
	if err := redisadapter.Announce(ctx, other, "tenants", redisadapter.OpRefresh, "acme"); err != nil {
		log.Fatal(err)
	}
	waitUntil(func() bool { return tenants.Stats().Refreshes == 1 })
	p, _ = tenants.Get(ctx, "acme")
	fmt.Println("after:", p)

	stop()
	fmt.Println("Follow returned:", <-done)
	// Output:
	// before: old-password
	// after: new-password
	// Follow returned: context canceled
}

// waitUntil polls cond every millisecond, for 5s at most.
func waitUntil(cond func() bool) {
	for deadline := time.Now().Add(5 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}
