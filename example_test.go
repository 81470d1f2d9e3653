package rescache_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rescache/rescache"
)

// conn stands for an expensive resource: a database pool, a client.
type conn struct {
	tenant string
	broken bool // the server behind it went away
}

// errBroken is the error of a query on a broken conn.
var errBroken = errors.New("connection reset by peer")

// query stands for a use of the resource.
func (c *conn) query() error {
	if c.broken {
		return errBroken
	}
	return nil
}

func (c *conn) Close() error {
	fmt.Println("closed", c.tenant)
	return nil
}

func dial(ctx context.Context, tenant string) (*conn, error) {
	if tenant == "" {
		return nil, errors.New("no tenant")
	}
	fmt.Println("dialed", tenant)
	return &conn{tenant: tenant}, nil
}

// Get builds a key's value once and then serves it from memory.
func ExampleCache_Get() {
	c, err := rescache.New(dial, nil)
	if err != nil {
		panic(err)
	}
	defer c.Close() // closes every value: *conn implements io.Closer

	ctx := context.Background()
	a1, _ := c.Get(ctx, "acme")
	a2, _ := c.Get(ctx, "acme")
	fmt.Println("same value:", a1 == a2)
	s := c.Stats()
	fmt.Printf("builds=%d hits=%d misses=%d\n", s.Builds, s.Hits, s.Misses)
	// Output:
	// dialed acme
	// same value: true
	// builds=1 hits=1 misses=1
	// closed acme
}

// Acquire holds a lease: the value stays open until release, even if its
// entry leaves the cache meanwhile.
func ExampleCache_Acquire() {
	c, _ := rescache.New(dial, nil)
	defer c.Close()

	ctx := context.Background()
	v, release, err := c.Acquire(ctx, "acme")
	if err != nil {
		panic(err)
	}
	c.Invalidate("acme") // the entry leaves now; v stays open
	fmt.Println("using", v.tenant)
	release() // the last lease: v is closed here
	// Output:
	// dialed acme
	// using acme
	// closed acme
}

// Lease holds a value for the span of its use: take it, defer Release. A
// caller that finds the value broken calls Discard instead: the entry
// leaves the cache, the value is closed at its last release, and the next
// Lease builds a fresh value. The hooks of a key's own Discard run on the
// caller's goroutine, before Discard returns.
func ExampleCache_Lease() {
	c, _ := rescache.New(dial, &rescache.Options[string, *conn]{
		OnEvict: func(tenant string, _ *conn, reason rescache.EvictReason) {
			fmt.Println("evicted", tenant, "for", reason)
		},
	})
	defer c.Close()

	// handle serves one request of tenant.
	handle := func(ctx context.Context, tenant string) error {
		l, err := c.Lease(ctx, tenant)
		if err != nil {
			return err
		}
		defer l.Release() // does nothing after Discard
		if err := l.Value().query(); err != nil {
			if errors.Is(err, errBroken) {
				l.Discard()
			}
			return err
		}
		fmt.Println("served", l.Key())
		return nil
	}

	ctx := context.Background()
	for i := range 3 {
		if i == 1 {
			v, _ := c.Peek("acme")
			v.broken = true // acme's server restarts
		}
		if err := handle(ctx, "acme"); err != nil {
			fmt.Println("request failed:", err)
		}
	}
	// Output:
	// dialed acme
	// served acme
	// evicted acme for discarded
	// closed acme
	// request failed: connection reset by peer
	// dialed acme
	// served acme
	// evicted acme for closed
	// closed acme
}

// With MaxEntries, adding an entry beyond the bound evicts the least
// recently used one; the Closer hook closes it and OnEvict says why. The
// hooks of an entry that another key's build evicts run on the cache's hook
// goroutine, so that the caller of the new key does not wait for them; this
// example waits for them through channels.
func ExampleOptions_eviction() {
	evicted, closed := make(chan string, 3), make(chan string, 3)
	c, _ := rescache.New(dial, &rescache.Options[string, *conn]{
		MaxEntries:  2,
		IdleTimeout: 10 * time.Minute,
		Close: func(tenant string, v *conn) error {
			closed <- tenant
			return nil
		},
		OnEvict: func(tenant string, _ *conn, reason rescache.EvictReason) {
			evicted <- tenant + " for " + reason.String()
		},
	})

	ctx := context.Background()
	c.Get(ctx, "acme")
	c.Get(ctx, "globex")
	c.Get(ctx, "initech") // a third tenant: acme, the least recently used, goes
	fmt.Println("cached:", c.Len())
	fmt.Println("evicted", <-evicted)
	fmt.Println("closed pool of", <-closed)

	c.Close() // runs the hooks of the entries it removes itself
	fmt.Println("evicted", <-evicted)
	fmt.Println("evicted", <-evicted)
	fmt.Println("closed pool of", <-closed)
	fmt.Println("closed pool of", <-closed)
	// Output:
	// dialed acme
	// dialed globex
	// dialed initech
	// cached: 2
	// evicted acme for capacity
	// closed pool of acme
	// evicted globex for closed
	// evicted initech for closed
	// closed pool of globex
	// closed pool of initech
}

// A build error reaches every caller waiting for that build and is not
// cached: the next call builds again (unless Options.ErrorTTL is set).
func ExampleNew_errors() {
	c, _ := rescache.New(dial, nil)
	defer c.Close()
	_, err := c.Get(context.Background(), "")
	fmt.Println(err)

	_, err = rescache.New[string, *conn](nil, nil)
	fmt.Println(err)
	// Output:
	// no tenant
	// rescache: New: build function is nil
}
