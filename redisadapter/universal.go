package redisadapter

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	rbudget "github.com/rescache/rescache/budget"
)

// UniversalOptions configures [NewUniversal].
type UniversalOptions[K comparable] struct {
	// Client returns the go-redis universal options of a tenant's client.
	// As in [redis.NewUniversalClient], the options choose the client: a
	// MasterName gives a Sentinel-backed failover client, two or more Addrs
	// (or IsClusterMode) a cluster client, and one address a single-node
	// client. A Redis Cluster has only database 0: isolate its tenants by
	// key prefix or by ACL user.
	//
	// The build calls it once per build of key, with the build's context.
	// The result is copied (Addrs included) before use and never modified.
	// An error, or nil options, fails the build with a [*BuildError].
	// PoolFIFO is passed through as [Options.Client] says (for a cluster,
	// to the pool of every node).
	//
	// Required.
	Client func(ctx context.Context, key K) (*redis.UniversalOptions, error)

	// PingTimeout bounds the PING with which a build checks its new client,
	// as [Options.PingTimeout] does. A cluster client answers it from one
	// node, after loading the cluster's slot map.
	//
	// default: 0, meaning [DefaultPingTimeout] (5s).
	PingTimeout time.Duration

	// HealthCheck has the cache PING its idle clients and evict a client
	// whose PING fails, as [Options.HealthCheck] does.
	//
	// default: false, no health checks.
	HealthCheck bool

	// MaxTotalConns is the most connections that all clients of the cache
	// together hold open at once, node, sentinel and Pub/Sub connections
	// included, as [Options.MaxTotalConns] describes.
	//
	// default: 0, no budget.
	MaxTotalConns int

	// Budget, instead of MaxTotalConns, is a budget shared with other caches
	// or processes, as [Options.Budget] describes.
	//
	// default: nil, MaxTotalConns decides.
	Budget rbudget.Budget

	// Cache configures the cache of clients. When Cache.Close is nil a
	// client leaving the cache is closed with its Close method.
	//
	// default: the zero rescache.Options: unbounded, no expiry.
	Cache rescache.Options[K, redis.UniversalClient]
}

// NewUniversal returns a cache of one [redis.UniversalClient] per tenant,
// built with the options opts.Client returns for the tenant's key. It
// returns an error when opts.Client is nil, when PingTimeout is negative,
// when opts.Cache sets HealthCheckInterval or HealthCheckTimeout with health
// checks off, or when [rescache.New] rejects opts.Cache. NewUniversal copies
// opts and never modifies it.
//
// The caller owns the cache and must Close it (or Shutdown it) to close every
// client.
func NewUniversal[K comparable](opts UniversalOptions[K]) (*rescache.Cache[K, redis.UniversalClient], error) {
	if opts.Client == nil {
		return nil, errors.New("redisadapter: UniversalOptions.Client is nil")
	}
	b, err := newBuilder(opts.PingTimeout, opts.Cache.KeyString, opts.MaxTotalConns, opts.Budget)
	if err != nil {
		return nil, err
	}
	clientOptions := opts.Client
	build := func(ctx context.Context, key K) (redis.UniversalClient, error) {
		o, err := clientOptions(ctx, key)
		if err != nil {
			return nil, b.fail(key, "", nil, err)
		}
		if o == nil {
			return nil, b.fail(key, "", nil, ErrNilOptions)
		}
		// go-redis writes a default into Addrs when it is empty, and the
		// cluster client keeps the slice: copy both.
		opt := *o
		opt.Addrs = slices.Clone(o.Addrs)
		secrets := []string{opt.Password, opt.SentinelPassword}
		if opt.Dialer == nil {
			for _, a := range opt.Addrs {
				err := checkAddr("", a)
				if a == "" {
					err = invalidAddr(a, "empty entry in Addrs")
				}
				if err != nil {
					return nil, b.fail(key, "", secrets, err)
				}
			}
		}
		addr := strings.Join(opt.Addrs, ",")
		if addr == "" {
			addr = "127.0.0.1:6379" // the go-redis default
		}
		var bc *budgetClient
		if b.budget != nil {
			base := opt.Dialer
			if base == nil {
				// go-redis's own dialer, with the universal options' dial
				// timeout and TLS, as each node's client would build it.
				base = redis.NewDialer(&redis.Options{DialTimeout: cmp.Or(opt.DialTimeout, 5*time.Second), TLSConfig: opt.TLSConfig})
			}
			bc = b.budget.newClient(base)
			opt.Dialer = bc.dial
		}
		return open(ctx, b, key, addr, secrets, bc, func() redis.UniversalClient { return redis.NewUniversalClient(&opt) })
	}
	cacheOpts, err := cacheOptions(opts.Cache, opts.HealthCheck, b.budget)
	if err != nil {
		return nil, err
	}
	c, err := rescache.New(build, &cacheOpts)
	if err != nil {
		return nil, err
	}
	if b.budget != nil {
		registerBudget(c, b.budget)
	}
	return c, nil
}
