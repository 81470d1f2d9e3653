// Package budget is the seam between rescache's adapters and a connection
// budget: the most connections that the pools of one or more caches hold
// open to one server at once.
//
// A [Budget] counts places. An adapter takes a place ([Budget.Acquire])
// before it opens a connection and gives it back ([Budget.Release]) once the
// connection is closed; while places are awaited ([Budget.Contended]) it
// closes a connection put back in its pool instead of keeping it idle; and it
// registers a [Reclaimer] that closes idle connections when a waiter needs
// their places. sqladapter and redisadapter take any Budget in their Options
// (Options.Budget); their MaxTotalConns option is [NewLocal] of that size.
//
// [Local], this package's implementation, bounds one process. The fleet
// budget of package github.com/rescache/rescache/budget/redisbudget bounds
// every process of a fleet together, through Redis.
package budget

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Budget is a connection budget: a number of places, one per connection
// open to the server, shared by every pool that uses it. Implementations are
// safe for concurrent use.
type Budget interface {
	// Acquire takes one place for a connection that the caller is about to
	// open. When none is free it waits, first come first served, until one
	// is or ctx ends; it then returns an error that matches ctx's error with
	// errors.Is, and holds nothing. While it waits, the budget calls its
	// reclaimers (see [Reclaimer]).
	Acquire(ctx context.Context) error

	// Release gives back one place taken by Acquire. Call it once per
	// successful Acquire, when the connection has been closed (or failed to
	// open).
	Release()

	// Contended reports whether a place is awaited now: by a caller of
	// Acquire in this process or, for a budget shared by several processes,
	// in another. While it is true, a pool should close a connection put
	// back in it instead of keeping it idle, so that its place goes to a
	// waiter.
	Contended() bool

	// AddReclaimer registers r, which the budget calls while places are
	// awaited and none is free, and returns a function that removes it
	// (idempotent). A pool registers one when it starts using the budget and
	// removes it when it is closed.
	AddReclaimer(r Reclaimer) (remove func())

	// Stats returns the figures of the budget now.
	Stats() Stats
}

// Reclaimer closes idle connections so that their places can go to a
// waiter.
type Reclaimer struct {
	// Reclaim closes idle connections, those of the least recently used
	// tenant that has any first, and returns how many it closed. The budget
	// calls it on a waiting caller's goroutine or on a goroutine of its own,
	// never under a lock of the budget; it must not call Acquire, and should
	// return promptly. Required.
	Reclaim func() int

	// Every, when positive, has the budget call Reclaim again every Every
	// while a wait lasts: for pools that cannot say when a connection goes
	// idle (go-redis). When zero, Reclaim is called once when a wait starts
	// (and, for a fleet budget, when another process announces a need).
	//
	// default: 0.
	Every time.Duration
}

// Stats are the figures of a budget.
type Stats struct {
	// Max is the size of the budget, N: for a fleet budget, that of the
	// whole fleet.
	Max int
	// Held is the number of places held by this process: connections open,
	// or closed and not yet released.
	Held int
	// FleetHeld is the number of places held by every process of the fleet
	// together, as last seen by this one (Redis's count, at the last reply).
	// For a [Local] budget it equals Held.
	FleetHeld int
	// Leased is the number of places this process holds from the fleet,
	// used or kept spare for its next connections. For a [Local] budget it
	// equals Held.
	Leased int
	// Waiting is the number of Acquire calls waiting now.
	Waiting int
	// WaitCount is the total number of Acquire calls that found no free
	// place and had to wait.
	WaitCount int64
	// WaitDuration is the total time those calls waited.
	WaitDuration time.Duration
	// RenewFailures is the total number of lease renewals that failed (a
	// fleet budget whose Redis did not answer); 0 for a Local budget.
	RenewFailures int64
	// Fallbacks is the total number of switches to the local fallback share
	// (a fleet budget that lost its lease); 0 for a Local budget.
	Fallbacks int64
	// Fallback tells whether the budget is on its local fallback share now.
	Fallback bool
}

// Reclaimers is a set of [Reclaimer]s, for implementations of [Budget]. The
// zero value is empty and ready to use; it is safe for concurrent use.
type Reclaimers struct {
	mu    sync.Mutex           // protects every field below
	next  uint64               // id of the next reclaimer added
	start uint64               // rotates the first reclaimer Run calls
	set   map[uint64]Reclaimer // by id
	order []uint64             // ids, in the order added
}

// Add registers r and returns the function that removes it. It panics if
// r.Reclaim is nil.
func (rs *Reclaimers) Add(r Reclaimer) (remove func()) {
	if r.Reclaim == nil {
		panic("budget: Reclaimer.Reclaim is nil")
	}
	rs.mu.Lock()
	if rs.set == nil {
		rs.set = make(map[uint64]Reclaimer)
	}
	id := rs.next
	rs.next++
	rs.set[id] = r
	rs.order = append(rs.order, id)
	rs.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			rs.mu.Lock()
			delete(rs.set, id)
			order := rs.order[:0:0]
			for _, o := range rs.order {
				if o != id {
					order = append(order, o)
				}
			}
			rs.order = order
			rs.mu.Unlock()
		})
	}
}

// Run calls the reclaimers in turn, starting one further along at each
// call so that no pool is always asked first, until one closes a
// connection, and returns the number it closed. With periodic only, it
// calls only those whose Every is positive. It calls them without holding
// any lock.
func (rs *Reclaimers) Run(periodic bool) int {
	rs.mu.Lock()
	list := make([]Reclaimer, 0, len(rs.order))
	n := uint64(len(rs.order))
	for i := range n {
		r := rs.set[rs.order[(rs.start+i)%n]]
		if !periodic || r.Every > 0 {
			list = append(list, r)
		}
	}
	rs.start++
	rs.mu.Unlock()
	for _, r := range list {
		if n := r.Reclaim(); n > 0 {
			return n
		}
	}
	return 0
}

// Every returns the shortest positive Every of the reclaimers, or 0 if none
// has one.
func (rs *Reclaimers) Every() time.Duration {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var d time.Duration
	for _, r := range rs.set {
		if r.Every > 0 && (d == 0 || r.Every < d) {
			d = r.Every
		}
	}
	return d
}

// Local is the budget of one process: a first-come-first-served semaphore
// of Max places (golang.org/x/sync/semaphore). Create it with [NewLocal]. It
// has no goroutine of its own; an Acquire that waits with a periodic
// reclaimer registered runs one, which ends with the wait.
type Local struct {
	max        int64
	sem        *semaphore.Weighted // one unit per place, FIFO for waiters
	reclaimers Reclaimers

	held      atomic.Int64 // units taken from sem
	waiting   atomic.Int64 // Acquire calls that have not got a unit yet
	waits     atomic.Int64 // Acquire calls that found the budget full
	waitNanos atomic.Int64 // total time those calls waited
}

var _ Budget = (*Local)(nil)

// NewLocal returns a budget of max places for one process. It returns an
// error when max is below 1.
func NewLocal(max int) (*Local, error) {
	if max < 1 {
		return nil, fmt.Errorf("budget: NewLocal(%d): the budget needs at least one place", max)
	}
	return &Local{max: int64(max), sem: semaphore.NewWeighted(int64(max))}, nil
}

// Acquire takes a place, as [Budget.Acquire] says. When the budget is full
// it calls the reclaimers once (on the caller's goroutine), then waits, first
// come first served; with a periodic reclaimer registered, a goroutine of
// the wait calls the periodic reclaimers every [Reclaimer.Every] until the
// wait ends.
func (l *Local) Acquire(ctx context.Context) error {
	if l.sem.TryAcquire(1) {
		l.held.Add(1)
		return nil
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	l.waits.Add(1)
	start := time.Now()
	defer func() { l.waitNanos.Add(int64(time.Since(start))) }()

	// TryAcquire fails while anyone queues, so a place freed by the
	// reclaim goes to this caller only when nobody was ahead of it.
	if l.reclaimers.Run(false) > 0 && l.sem.TryAcquire(1) {
		l.held.Add(1)
		return nil
	}
	every := l.reclaimers.Every()
	if every <= 0 {
		if err := l.sem.Acquire(ctx, 1); err != nil {
			return err
		}
		l.held.Add(1)
		return nil
	}
	got := make(chan error, 1)
	// The semaphore's Acquire keeps this caller's place in the queue while
	// the loop below reclaims; it returns when ctx ends at the latest.
	go func() { got <- l.sem.Acquire(ctx, 1) }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case err := <-got:
			if err != nil {
				return err
			}
			l.held.Add(1)
			return nil
		case <-tick.C:
			l.reclaimers.Run(true)
		}
	}
}

// Release gives back a place. It panics (in the semaphore) when no place
// is held.
func (l *Local) Release() {
	l.held.Add(-1)
	l.sem.Release(1)
}

// Contended reports whether an Acquire waits now.
func (l *Local) Contended() bool { return l.waiting.Load() > 0 }

// AddReclaimer registers r; see [Budget.AddReclaimer].
func (l *Local) AddReclaimer(r Reclaimer) (remove func()) { return l.reclaimers.Add(r) }

// Stats returns the budget's figures; FleetHeld and Leased equal Held.
func (l *Local) Stats() Stats {
	held := int(l.held.Load())
	return Stats{
		Max:          int(l.max),
		Held:         held,
		FleetHeld:    held,
		Leased:       held,
		Waiting:      int(l.waiting.Load()),
		WaitCount:    l.waits.Load(),
		WaitDuration: time.Duration(l.waitNanos.Load()),
	}
}
