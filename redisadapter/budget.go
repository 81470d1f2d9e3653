package redisadapter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"

	"github.com/rescache/rescache"
	rbudget "github.com/rescache/rescache/budget"
)

// ErrBudgetWait is matched with errors.Is by the error of a command, or of
// a build's PING, whose dial waited for a connection of the budget
// (MaxTotalConns or the Budget option) until its context ended (go-redis bounds a dial by DialTimeout,
// default 5s). The same error also matches the context's error.
var ErrBudgetWait = errors.New("redisadapter: no connection of the MaxTotalConns budget became free")

// reclaimIdleAfter is how long a connection must have been quiet, after the
// read of its last reply, before a waiter may close it. go-redis reads a
// reply and puts the connection back within microseconds; the margin keeps
// a connection whose reply is still being read (a slow reader, a GC pause)
// from being taken back in the middle.
const reclaimIdleAfter = 50 * time.Millisecond

// reclaimEvery is how often a waiter looks again for idle connections to
// take back: go-redis does not say when it puts a connection back in its
// pool.
const reclaimEvery = 10 * time.Millisecond

// budget is one cache's use of a connection budget: the places come from b
// (a budget.Local for MaxTotalConns, or the Budget option, which other
// caches and processes may share); the clients are those of this cache,
// whose idle connections its reclaimer closes. It is safe for concurrent
// use. It has no goroutine of its own: b calls reclaim on a waiting dial's
// goroutine or on one of b's own.
type budget struct {
	b      rbudget.Budget
	remove func()    // removes the reclaimer from b
	epoch  time.Time // origin of the times below

	reclaimed atomic.Int64 // idle connections closed to make room

	mu       sync.Mutex                 // protects clients and byClient
	clients  map[*budgetClient]struct{} // clients whose connections may be reclaimed
	byClient map[any]*budgetClient      // the go-redis client of each budgetClient
}

// newBudget returns the budget of a cache over b and registers its
// reclaimer with b: go-redis does not say when it puts a connection back in
// its pool, so b calls it every reclaimEvery while a dial waits.
func newBudget(b rbudget.Budget) *budget {
	bu := &budget{
		b:        b,
		epoch:    time.Now(),
		clients:  make(map[*budgetClient]struct{}),
		byClient: make(map[any]*budgetClient),
	}
	bu.remove = b.AddReclaimer(rbudget.Reclaimer{Reclaim: bu.reclaim, Every: reclaimEvery})
	return bu
}

func (b *budget) now() int64 { return int64(time.Since(b.epoch)) }

// budgetClient is the dialer of one tenant's client (and of every node and
// Pub/Sub connection of it) under a budget.
type budgetClient struct {
	budget  *budget
	base    func(ctx context.Context, network, addr string) (net.Conn, error)
	lastUse atomic.Int64 // budget.now() at the last read of any of its connections
	waiting atomic.Int64 // its dials taking or waiting for a place now

	ctx    context.Context // ends when the client leaves the budget: stops its dials' waits
	cancel context.CancelFunc

	mu    sync.Mutex               // protects conns
	conns map[*budgetConn]struct{} // open connections
}

// newClient returns the dialer of a new client whose connections base
// opens.
func (b *budget) newClient(base func(context.Context, string, string) (net.Conn, error)) *budgetClient {
	bc := &budgetClient{budget: b, base: base, conns: make(map[*budgetConn]struct{})}
	bc.ctx, bc.cancel = context.WithCancel(context.Background())
	bc.lastUse.Store(b.now())
	b.mu.Lock()
	b.clients[bc] = struct{}{}
	b.mu.Unlock()
	return bc
}

// bind records that client dials through bc, for forget.
func (b *budget) bind(client any, bc *budgetClient) {
	b.mu.Lock()
	b.byClient[client] = bc
	b.mu.Unlock()
}

// forget removes the client, closed, from the budget: its dials stop
// waiting. Its connections gave their places back when go-redis closed
// them.
func (b *budget) forget(client any) {
	b.mu.Lock()
	bc := b.byClient[client]
	delete(b.byClient, client)
	b.mu.Unlock()
	if bc != nil {
		b.forgetClient(bc)
	}
}

func (b *budget) forgetClient(bc *budgetClient) {
	b.mu.Lock()
	delete(b.clients, bc)
	b.mu.Unlock()
	bc.cancel()
}

// dial is the go-redis Dialer of the client: it takes a place in the
// budget, then dials with the base dialer; a failed dial gives the place
// back at once.
func (bc *budgetClient) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	b := bc.budget
	if err := b.acquire(ctx, bc); err != nil {
		return nil, err
	}
	conn, err := bc.base(ctx, network, addr)
	if err != nil {
		b.release()
		return nil, err
	}
	c := &budgetConn{Conn: conn, client: bc}
	bc.mu.Lock()
	bc.conns[c] = struct{}{}
	bc.mu.Unlock()
	if _, ok := conn.(syscall.Conn); ok {
		// go-redis checks the health of a pooled connection through
		// syscall.Conn; keep that, and claim it only when the connection
		// has it.
		return &budgetSysConn{c}, nil
	}
	return c, nil
}

// acquire takes one place in the budget for a connection bc is about to
// dial. When the budget is full, b.b calls the reclaimers (this cache's
// closes idle connections, least recently used client first, at once and
// every reclaimEvery) and waits, first come first served, until a place is
// free, ctx ends or bc leaves the budget.
func (b *budget) acquire(ctx context.Context, bc *budgetClient) error {
	bc.waiting.Add(1)
	defer bc.waiting.Add(-1)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(bc.ctx, cancel)
	defer stop()
	err := b.b.Acquire(actx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%d connections, all held): %w", ErrBudgetWait, b.b.Stats().Max, ctx.Err())
	case bc.ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrBudgetWait, redis.ErrClosed)
	}
	return fmt.Errorf("%w: %w", ErrBudgetWait, err)
}

// release gives back one place in the budget.
func (b *budget) release() { b.b.Release() }

// reclaim closes the idle connections of the least recently used client
// that has any, and returns how many it closed.
func (b *budget) reclaim() int {
	b.mu.Lock()
	clients := make([]*budgetClient, 0, len(b.clients))
	for bc := range b.clients {
		clients = append(clients, bc)
	}
	b.mu.Unlock()
	slices.SortFunc(clients, func(x, y *budgetClient) int {
		return cmp.Compare(x.lastUse.Load(), y.lastUse.Load())
	})
	now := b.now()
	for _, bc := range clients {
		bc.mu.Lock()
		conns := make([]*budgetConn, 0, len(bc.conns))
		for c := range bc.conns {
			conns = append(conns, c)
		}
		bc.mu.Unlock()
		closed := 0
		for _, c := range conns {
			if c.reclaim(now) {
				b.reclaimed.Add(1)
				closed++
			}
		}
		if closed > 0 {
			return closed
		}
	}
	return 0
}

// budgetConn is a connection that holds one place of the budget until it is
// closed. A connection whose last reply was read more than
// reclaimIdleAfter ago, with no read or write under way, is idle in its
// pool: a waiter may close it. go-redis then finds it closed when it takes
// it from the pool (its health check, or io.EOF on the first write, before
// anything was sent), drops it and retries the command on a new
// connection.
type budgetConn struct {
	net.Conn
	client *budgetClient

	mu       sync.Mutex // protects busy, lastRead and dead
	busy     int        // reads and writes under way
	lastRead int64      // budget.now() at the end of the last read; 0 after a write (a reply is due)
	dead     bool       // closed by a reclaim: reads and writes return io.EOF

	released atomic.Bool // set by the first close, which gives the place back
}

func (c *budgetConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return 0, io.EOF
	}
	c.busy++
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	now := c.client.budget.now()
	c.mu.Lock()
	c.busy--
	c.lastRead = now
	c.mu.Unlock()
	c.client.lastUse.Store(now)
	return n, err
}

func (c *budgetConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return 0, io.EOF
	}
	c.busy++
	c.lastRead = 0
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.busy--
	c.mu.Unlock()
	return n, err
}

// reclaim closes c if it is idle at now, and reports whether it did.
func (c *budgetConn) reclaim(now int64) bool {
	c.mu.Lock()
	if c.dead || c.busy > 0 || c.lastRead == 0 || now-c.lastRead < int64(reclaimIdleAfter) {
		c.mu.Unlock()
		return false
	}
	c.dead = true
	c.mu.Unlock()
	c.Close()
	return true
}

// closeDrainTimeout bounds how long Close waits for the server to close its
// side of a connection.
const closeDrainTimeout = time.Second

// Close closes the connection and gives its place back, once; a later
// Close does nothing and returns nil. Before it
// gives the place back it half-closes the connection and reads until the
// server has closed its side too, so that the server no longer counts the
// connection when the place is taken again: the budget holds as the
// server counts, not only as the client does.
func (c *budgetConn) Close() error {
	first := c.released.CompareAndSwap(false, true)
	if first {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.Conn.SetReadDeadline(time.Now().Add(closeDrainTimeout))
			// Whatever the server still sends is of no use to anyone: the
			// connection is being closed. The read ends at its EOF.
			_, _ = io.Copy(io.Discard, c.Conn)
		}
	}
	if !first {
		// Only a reclaim and go-redis's pool close a budgetConn, and a
		// reclaim ignores what Close returns: this is the pool closing a
		// connection a reclaim closed, which is not an error of the pool's
		// (TCP would say "use of closed network connection", and the
		// pool's Close, hence the cache's, would return it).
		return nil
	}
	err := c.Conn.Close()
	bc := c.client
	bc.mu.Lock()
	delete(bc.conns, c)
	bc.mu.Unlock()
	bc.budget.release()
	return err
}

// NetConn returns the wrapped connection, as crypto/tls.Conn does.
func (c *budgetConn) NetConn() net.Conn { return c.Conn }

// budgetSysConn is a budgetConn over a connection that has a file
// descriptor.
type budgetSysConn struct{ *budgetConn }

// SyscallConn returns the wrapped connection's; after a reclaim it returns
// the error of a closed connection, which go-redis's health check reads as
// a dead connection.
func (c *budgetSysConn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if dead {
		return nil, net.ErrClosed
	}
	return c.Conn.(syscall.Conn).SyscallConn()
}

// budgetHook names the budget in the error of a command whose context
// ended while a dial of its client waited for the budget: go-redis dials
// in the background and answers such a command with the bare context
// error.
type budgetHook struct{ client *budgetClient }

func (h budgetHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h budgetHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && h.waitedOut(ctx, err) {
			err = h.wrap(err)
			cmd.SetErr(err)
		}
		return err
	}
}

func (h budgetHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && h.waitedOut(ctx, err) {
			err = h.wrap(err)
			for _, cmd := range cmds {
				if cmd.Err() != nil {
					cmd.SetErr(err)
				}
			}
		}
		return err
	}
}

// waitedOut reports whether err is ctx's end while a dial of the client
// waits for the budget.
func (h budgetHook) waitedOut(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err()) && !errors.Is(err, ErrBudgetWait) && h.client.waiting.Load() > 0
}

func (h budgetHook) wrap(err error) error {
	return fmt.Errorf("%w (%d connections, all held): %w", ErrBudgetWait, h.client.budget.b.Stats().Max, err)
}

// BudgetStats are the figures of a cache's budget (MaxTotalConns or the
// Budget option).
type BudgetStats struct {
	// MaxTotalConns is the size of the budget (for a fleet budget, that of
	// the whole fleet); 0 means the cache has none and every other field is
	// zero.
	MaxTotalConns int
	// Held is the number of places of the budget held in this process:
	// connections open in all clients of the cache (and of any other cache
	// sharing the Budget option), evicted clients still draining included.
	Held int
	// FleetHeld is the number of places held by the whole fleet, as last
	// seen (for a budget of one process, Held).
	FleetHeld int
	// Waiting is the number of dials waiting for a place now.
	Waiting int
	// WaitCount is the total number of dials that found the budget full.
	WaitCount int64
	// WaitDuration is the total time those dials reclaimed or waited.
	WaitDuration time.Duration
	// Reclaimed is the total number of idle connections of this cache's
	// tenants closed to make room.
	Reclaimed int64
	// RenewFailures and Fallbacks count a fleet budget's failed lease
	// renewals and its switches to the local fallback share; Fallback tells
	// whether it is on that share now (see budget.Stats).
	RenewFailures int64
	Fallbacks     int64
	Fallback      bool
}

func (b *budget) stats() BudgetStats {
	s := b.b.Stats()
	return BudgetStats{
		MaxTotalConns: s.Max,
		Held:          s.Held,
		FleetHeld:     s.FleetHeld,
		Waiting:       s.Waiting,
		WaitCount:     s.WaitCount,
		WaitDuration:  s.WaitDuration,
		Reclaimed:     b.reclaimed.Load(),
		RenewFailures: s.RenewFailures,
		Fallbacks:     s.Fallbacks,
		Fallback:      s.Fallback,
	}
}

// budgets maps a cache made by [New] or [NewUniversal] with a budget, by a
// weak pointer, to its budget. A cleanup deletes the entry when the cache
// is collected.
var budgets sync.Map

// registerBudget also removes the cache's reclaimer from the budget when
// the cache is collected.
func registerBudget[K comparable, C redis.UniversalClient](c *rescache.Cache[K, C], b *budget) {
	key := weak.Make(c)
	budgets.Store(key, b)
	remove := b.remove
	runtime.AddCleanup(c, func(k weak.Pointer[rescache.Cache[K, C]]) {
		budgets.Delete(k)
		remove()
	}, key)
}

// PoolBudget returns the figures of the budget (MaxTotalConns or the
// Budget option) of c, a cache made by [New] or [NewUniversal]: its size,
// the connections held, waits, wait time, reclaims and, for a fleet budget,
// the fleet's figures. For a cache without a budget it returns the zero
// BudgetStats.
func PoolBudget[K comparable, C redis.UniversalClient](c *rescache.Cache[K, C]) BudgetStats {
	v, ok := budgets.Load(weak.Make(c))
	if !ok {
		return BudgetStats{}
	}
	return v.(*budget).stats()
}
