package contender

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The simulated database server of the burst: each tenant's value is a
// small connection pool (a stand-in for a *sql.DB) whose connections are
// counted at a shared Server, the count a real server's max_connections
// would be checked against. A Server may have a connection budget: at most
// Budget connections across all pools, where a pool that needs one while
// the budget is spent first has an idle connection of another pool closed
// (as Commons Pool's GenericKeyedObjectPool clearOldest does), then waits.
// The budget here is a semaphore in the benchmark, not sqladapter's.

var (
	// errBudget is returned by a connect that waited BudgetWait for a slot.
	errBudget = errors.New("contender: server connection budget exhausted")
	// errPoolClosed is returned by a pool closed before or during a
	// request, as database/sql returns "sql: database is closed".
	errPoolClosed = errors.New("contender: pool is closed")
)

// Server counts the connections open to it and the peak of that count. Its
// zero value has no budget and connects at once.
type Server struct {
	// Connect is how long opening a connection takes.
	Connect time.Duration
	// Budget is the most connections open at once across all pools; 0
	// means no budget.
	Budget int
	// BudgetWait is how long a connect waits for a slot of the budget
	// before it fails.
	BudgetWait time.Duration

	open, peak atomic.Int64
	initOnce   sync.Once
	slots      chan struct{} // one token per open connection; nil without a budget

	mu    sync.Mutex // protects pools
	pools map[*simPool]struct{}
}

// Open returns the number of connections open now.
func (s *Server) Open() int64 { return s.open.Load() }

// Peak returns the most connections that were open at once.
func (s *Server) Peak() int64 { return s.peak.Load() }

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.Budget > 0 {
			s.slots = make(chan struct{}, s.Budget)
		}
		s.pools = make(map[*simPool]struct{})
	})
}

// connect opens one connection for p: it takes a slot of the budget, if
// there is one (see takeSlot), waits Connect and counts the connection.
func (s *Server) connect(ctx context.Context, p *simPool) error {
	s.init()
	if s.slots != nil {
		if err := s.takeSlot(ctx, p); err != nil {
			return err
		}
	}
	if s.Connect > 0 {
		time.Sleep(s.Connect)
	}
	n := s.open.Add(1)
	for {
		pk := s.peak.Load()
		if n <= pk || s.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	return nil
}

// takeSlot takes a slot of the budget for p. While none is free it has an
// idle connection of another pool closed, every millisecond, until a slot
// is taken or BudgetWait has passed.
func (s *Server) takeSlot(ctx context.Context, p *simPool) error {
	deadline := time.Now().Add(s.BudgetWait)
	for {
		select {
		case s.slots <- struct{}{}:
			return nil
		default:
		}
		s.reclaim(p)
		wait := min(time.Millisecond, time.Until(deadline))
		if wait <= 0 {
			return errBudget
		}
		t := time.NewTimer(wait)
		select {
		case s.slots <- struct{}{}:
			t.Stop()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// disconnect closes one connection.
func (s *Server) disconnect() {
	s.open.Add(-1)
	if s.slots != nil {
		<-s.slots
	}
}

// reclaim closes one idle connection of a pool other than p, if any.
func (s *Server) reclaim(p *simPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q := range s.pools {
		if q != p && q.dropIdle() {
			return
		}
	}
}

func (s *Server) register(p *simPool) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools[p] = struct{}{}
}

func (s *Server) unregister(p *simPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pools, p)
}

// simPool is a tenant's pool of at most cap(slots) connections to srv.
type simPool struct {
	srv   *Server
	slots chan struct{} // one token per open connection of this pool
	idle  chan struct{} // one token per idle connection

	mu     sync.Mutex // protects closed, and puts into idle against close's drain
	closed bool
}

func newSimPool(srv *Server, size int) *simPool {
	p := &simPool{srv: srv, slots: make(chan struct{}, size), idle: make(chan struct{}, size)}
	srv.register(p)
	return p
}

func (p *simPool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// conn takes an idle connection or opens one, waiting while the pool is at
// its size. It fails on a closed pool.
func (p *simPool) conn(ctx context.Context) error {
	if p.isClosed() {
		return errPoolClosed
	}
	select {
	case <-p.idle:
	default:
		select {
		case <-p.idle:
		case p.slots <- struct{}{}:
			if err := p.srv.connect(ctx, p); err != nil {
				<-p.slots
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if p.isClosed() {
		p.drop()
		return errPoolClosed
	}
	return nil
}

// put returns a connection: idle, or closed if the pool is.
func (p *simPool) put() {
	p.mu.Lock()
	if !p.closed {
		p.idle <- struct{}{} // never blocks: at most cap(idle) connections exist
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.drop()
}

// drop closes one connection of the pool.
func (p *simPool) drop() {
	<-p.slots
	p.srv.disconnect()
}

// dropIdle closes one idle connection, if there is one.
func (p *simPool) dropIdle() bool {
	select {
	case <-p.idle:
		p.drop()
		return true
	default:
		return false
	}
}

// close closes the idle connections now; those in use close when put.
func (p *simPool) close() {
	p.srv.unregister(p)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for p.dropIdle() {
	}
}
