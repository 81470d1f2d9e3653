package redisadapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	rbudget "github.com/rescache/rescache/budget"
)

// DefaultPingTimeout is the ping timeout of a build when
// [Options.PingTimeout] or [UniversalOptions.PingTimeout] is zero.
const DefaultPingTimeout = 5 * time.Second

// Options configures [New].
type Options[K comparable] struct {
	// Client returns the go-redis options of a tenant's client. The build
	// calls it once per build of key, with the build's context (it carries
	// the values of the caller that started the build; see
	// [rescache.Options.BuildTimeout] for its deadline). The result is copied
	// before use and never modified, so the function may return a shared or
	// cached *redis.Options. An error, or nil options, fails the build with
	// a [*BuildError].
	//
	// Every field is passed to go-redis as it is. PoolFIFO says which idle
	// connection of the tenant's pool a command gets: false (go-redis's
	// default, the zero value) the one returned last, like database/sql
	// and sqladapter.MostRecentlyUsed; true the one returned longest ago,
	// so that every idle connection serves in turn, like
	// sqladapter.LeastRecentlyUsed (redis/go-redis#1820). Choose true
	// behind a TCP load balancer or DNS round robin over replicas, or
	// whenever the commands should spread over every open connection; it
	// spreads over the connections the pool keeps, so keep enough of them
	// (MinIdleConns and MaxIdleConns at least a few per replica).
	//
	// Required.
	Client func(ctx context.Context, key K) (*redis.Options, error)

	// PingTimeout bounds the PING with which a build checks its new client,
	// dial included. It is enforced even when the server accepts the
	// connection and never answers: the build then closes the client and
	// fails with an error that matches [context.DeadlineExceeded]. It is cut
	// shorter by the build's own deadline. With a Budget, the dial's wait
	// for a free connection of the budget is part of it: give callers
	// that may wait long for a place (a fleet budget under load) a longer
	// PingTimeout.
	//
	// default: 0, meaning [DefaultPingTimeout] (5s).
	PingTimeout time.Duration

	// HealthCheck has the cache PING its idle clients, every
	// Cache.HealthCheckInterval and within Cache.HealthCheckTimeout (see
	// [rescache.Options.HealthCheck]), and evict a client whose PING fails;
	// the tenant's next call builds a new client. It sets Cache.HealthCheck
	// when that is nil; a HealthCheck of your own is kept as it is.
	//
	// default: false, no health checks.
	HealthCheck bool

	// MaxTotalConns is the most connections that all clients of the cache
	// together hold open at once: each client's pool, its Pub/Sub
	// connections and, for cluster and failover clients, the connections
	// to every node and sentinel, counting clients that were evicted and
	// are still draining. Set it below the server's maxclients minus what
	// other clients need. It works through go-redis's Dialer: a
	// Dialer of the tenant's options is kept and wrapped.
	//
	// A dial that finds the budget full closes idle connections, least
	// recently used tenant first (a connection is idle when
	// its last reply was read over 50ms ago and nothing is under way on
	// it; go-redis finds it closed when it next takes it from its pool,
	// drops it and dials again), then waits, first come first served,
	// until a connection is closed or the dial's context ends: go-redis
	// bounds a dial by DialTimeout (default 5s). A wait that ends fails the
	// command with an error that matches [ErrBudgetWait] and the context's
	// error. A Pub/Sub connection with no Receive under way counts as
	// idle: go-redis reconnects and subscribes again, and messages
	// published meanwhile are lost.
	//
	// A caller that holds a connection while it needs another (a
	// transaction on a pinned connection, a subscription, then a command
	// through the pool) can deadlock when every connection of the budget is
	// held that way: each waits for a connection only the others can free.
	// Keep the budget above the number of such callers at once, and give
	// commands a deadline.
	//
	// default: 0, no budget: each client holds up to its PoolSize
	// connections (go-redis: 10 per GOMAXPROCS) plus Pub/Sub.
	MaxTotalConns int

	// Budget, instead of MaxTotalConns, is the budget the clients of the
	// cache take their connections from, with the mechanism MaxTotalConns
	// describes: a [github.com/rescache/rescache/budget.Local] shared with
	// other caches of the process, or a fleet budget (package
	// github.com/rescache/rescache/budget/redisbudget) that bounds every
	// process of a fleet together. The cache registers a reclaimer with it
	// (idle connections of its least recently used client, called every
	// 10ms while a dial waits) for as long as the cache is reachable.
	// Setting both Budget and MaxTotalConns is an error.
	//
	// default: nil, MaxTotalConns decides.
	Budget rbudget.Budget

	// Cache configures the cache of clients. When Cache.Close is nil a
	// client leaving the cache is closed with its Close method, which closes
	// its connections.
	//
	// default: the zero rescache.Options: unbounded, no expiry.
	Cache rescache.Options[K, *redis.Client]
}

// New returns a cache of one *redis.Client per tenant, built with the
// options opts.Client returns for the tenant's key. It returns an error when
// opts.Client is nil, when PingTimeout is negative, when opts.Cache sets
// HealthCheckInterval or HealthCheckTimeout with health checks off, or when
// [rescache.New] rejects opts.Cache. New copies opts and never modifies it.
//
// The caller owns the cache and must Close it (or Shutdown it) to close every
// client.
func New[K comparable](opts Options[K]) (*rescache.Cache[K, *redis.Client], error) {
	if opts.Client == nil {
		return nil, errors.New("redisadapter: Options.Client is nil")
	}
	b, err := newBuilder(opts.PingTimeout, opts.Cache.KeyString, opts.MaxTotalConns, opts.Budget)
	if err != nil {
		return nil, err
	}
	clientOptions := opts.Client
	build := func(ctx context.Context, key K) (*redis.Client, error) {
		o, err := clientOptions(ctx, key)
		if err != nil {
			return nil, b.fail(key, "", nil, err)
		}
		if o == nil {
			return nil, b.fail(key, "", nil, ErrNilOptions)
		}
		opt := *o
		secrets := []string{opt.Password}
		if opt.Dialer == nil {
			if err := checkAddr(opt.Network, opt.Addr); err != nil {
				return nil, b.fail(key, "", secrets, err)
			}
		}
		addr := opt.Addr
		if addr == "" {
			addr = "localhost:6379" // the go-redis default
		}
		var bc *budgetClient
		if b.budget != nil {
			base := opt.Dialer
			if base == nil {
				// go-redis's own dialer, which reads DialTimeout and
				// TLSConfig from opt once NewClient has set its defaults.
				base = redis.NewDialer(&opt)
			}
			bc = b.budget.newClient(base)
			opt.Dialer = bc.dial
		}
		return open(ctx, b, key, addr, secrets, bc, func() *redis.Client { return redis.NewClient(&opt) })
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

// builder holds what the build functions of [New] and [NewUniversal] share.
type builder[K comparable] struct {
	pingTimeout time.Duration  // > 0
	keyString   func(K) string // never nil
	budget      *budget        // nil without MaxTotalConns or Budget
}

func newBuilder[K comparable](pingTimeout time.Duration, keyString func(K) string, maxTotalConns int, shared rbudget.Budget) (*builder[K], error) {
	if pingTimeout < 0 {
		return nil, fmt.Errorf("redisadapter: PingTimeout is negative (%v)", pingTimeout)
	}
	if maxTotalConns < 0 {
		return nil, fmt.Errorf("redisadapter: MaxTotalConns is negative (%d)", maxTotalConns)
	}
	if maxTotalConns > 0 && shared != nil {
		return nil, fmt.Errorf("redisadapter: set either MaxTotalConns (%d) or Budget, not both", maxTotalConns)
	}
	var bud *budget
	switch {
	case shared != nil:
		bud = newBudget(shared)
	case maxTotalConns > 0:
		local, err := rbudget.NewLocal(maxTotalConns)
		if err != nil {
			return nil, fmt.Errorf("redisadapter: %w", err)
		}
		bud = newBudget(local)
	}
	if pingTimeout == 0 {
		pingTimeout = DefaultPingTimeout
	}
	if keyString == nil {
		keyString = func(k K) string { return fmt.Sprint(k) }
	}
	return &builder[K]{pingTimeout: pingTimeout, keyString: keyString, budget: bud}, nil
}

// fail returns the [*BuildError] of key.
func (b *builder[K]) fail(key K, addr string, secrets []string, err error) error {
	return &BuildError{Tenant: b.keyString(key), Addr: addr, Err: err, secrets: secrets}
}

// open creates a client with newClient and PINGs it within b.pingTimeout.
// On failure it closes the client, waits until its PING has returned, and
// returns a [*BuildError]; nothing of the client is left running.
//
// Under a budget, bc is the client's dialer: open binds it to the client,
// or takes it out of the budget when the build fails.
func open[K comparable, C redis.UniversalClient](ctx context.Context, b *builder[K], key K, addr string, secrets []string, bc *budgetClient, newClient func() C) (C, error) {
	var zero C
	c, err := create(newClient)
	if err != nil {
		if bc != nil {
			b.budget.forgetClient(bc)
		}
		return zero, b.fail(key, addr, secrets, err)
	}
	if bc != nil {
		b.budget.bind(c, bc)
		c.AddHook(budgetHook{client: bc})
	}
	pctx, cancel := context.WithTimeoutCause(ctx, b.pingTimeout,
		fmt.Errorf("no reply to PING within %v: %w", b.pingTimeout, context.DeadlineExceeded))
	defer cancel()
	// go-redis bounds a socket read by the client's ReadTimeout, not by the
	// context, so the PING runs in a goroutine of its own and a timeout
	// closes the client, which ends the PING at once.
	done := make(chan error, 1)
	go func() { done <- c.Ping(pctx).Err() }()
	select {
	case err = <-done:
		if err != nil {
			c.Close()
		}
	case <-pctx.Done():
		c.Close()
		<-done
		err = context.Cause(pctx)
	}
	if err != nil {
		if bc != nil {
			b.budget.forget(c)
		}
		return zero, b.fail(key, addr, secrets, fmt.Errorf("ping: %w", err))
	}
	return c, nil
}

// create calls newClient, turning a panic of go-redis on options it rejects
// into an error.
func create[C any](newClient func() C) (c C, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("creating the client: %v", r)
		}
	}()
	return newClient(), nil
}

// cacheOptions returns o with the defaults of this package filled in: Close
// closes the client, and HealthCheck PINGs it when healthCheck is set and o
// has no HealthCheck of its own. It reports a health-check interval set
// without a check, in the words of this package's options.
//
// Under a budget, Close also takes the client out of the budget.
func cacheOptions[K comparable, C redis.UniversalClient](o rescache.Options[K, C], healthCheck bool, bud *budget) (rescache.Options[K, C], error) {
	if !healthCheck && o.HealthCheck == nil && (o.HealthCheckInterval > 0 || o.HealthCheckTimeout > 0) {
		return o, errors.New("redisadapter: Cache.HealthCheckInterval or Cache.HealthCheckTimeout is set but health checks are off; set HealthCheck to PING idle clients")
	}
	if o.Close == nil {
		o.Close = func(_ K, c C) error { return c.Close() }
	}
	if healthCheck && o.HealthCheck == nil {
		o.HealthCheck = func(ctx context.Context, _ K, c C) error { return ping(ctx, c) }
	}
	if bud != nil {
		closeClient := o.Close
		o.Close = func(key K, c C) error {
			err := closeClient(key, c)
			bud.forget(c)
			return err
		}
	}
	return o, nil
}

// ping sends PING on c and returns its error, or ctx's error as soon as ctx
// ends. In that case the PING goroutine ends when the PING does: at once
// when the caller closes c (the cache closes a client that failed its health
// check), at the latest after c's ReadTimeout.
func ping(ctx context.Context, c redis.UniversalClient) error {
	done := make(chan error, 1)
	go func() { done <- c.Ping(ctx).Err() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("redisadapter: ping: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("redisadapter: ping: %w", ctx.Err())
	}
}
