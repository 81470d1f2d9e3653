package sqladapter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Pick says which idle connection of a tenant's pool a query gets: see
// [PoolSettings.Pick].
type Pick int

const (
	// MostRecentlyUsed hands a query the idle connection returned last:
	// database/sql's own pool, which keeps its idle connections on a stack.
	// It is the zero value. Under a steady load it reuses the few
	// connections the concurrency needs and lets the others time out.
	MostRecentlyUsed Pick = iota

	// LeastRecentlyUsed hands a query the idle connection returned longest
	// ago, so that every idle connection of the pool is used in turn. The
	// pool then keeps its idle connections itself, in a FIFO queue in the
	// connector (database/sql keeps none). Choose it behind a TCP load
	// balancer or DNS round robin over replicas, or whenever the work should
	// spread over every open connection; it spreads over the connections
	// kept, so keep enough idle connections (MaxIdleConns, at least a few
	// per replica). The package documentation lists what changes.
	LeastRecentlyUsed
)

// String returns "MostRecentlyUsed" or "LeastRecentlyUsed"; another value
// reads "Pick(n)".
func (p Pick) String() string {
	switch p {
	case MostRecentlyUsed:
		return "MostRecentlyUsed"
	case LeastRecentlyUsed:
		return "LeastRecentlyUsed"
	}
	return fmt.Sprintf("Pick(%d)", int(p))
}

// lifetimeJitter is the share of ConnMaxLifetime by which the lifetime of a
// connection under LeastRecentlyUsed is shortened, drawn once per
// connection when it opens: its lifetime lies in (0.9, 1] x ConnMaxLifetime,
// so that connections opened together (a burst) do not close together, and
// none outlives ConnMaxLifetime.
const lifetimeJitter = 0.1

// maxBadConnRetries is database/sql's number of tries of a query on a
// cached connection before it asks for a new one (sql.go).
const maxBadConnRetries = 2

// This file implements LeastRecentlyUsed. It follows database/sql's design
// (sql.go) for everything but the order of the free list:
//
//   - database/sql's free list (DB.freeConn) hands out its last element
//     ("Reuse the lowest idle time connection"); pickPool.idle hands out its
//     first, the connection returned longest ago, as go-redis's
//     Options.PoolFIFO does (redis/go-redis#1820, where a FIFO pool spreads
//     the load over the connections and a LIFO one lets the extra
//     connections time out).
//   - A connection is checked when it is put back (DB.putConn calls
//     driver.Validator's IsValid; putConnDBLocked keeps it only while the
//     pool is open and under MaxIdleConns, else counts it in MaxIdleClosed
//     and closes it) and when it is taken (DB.conn closes one past its
//     lifetime, and calls driver.SessionResetter's ResetSession, closing
//     the connection on driver.ErrBadConn), and an idle one is closed once
//     idle for ConnMaxIdleTime or past ConnMaxLifetime (the cleaner of
//     database/sql; here a timer at the earliest expiry). Lifetimes are
//     drawn once per connection with a jitter (lifetimeJitter), a lesson of
//     jackc/pgx#1437 and redis/go-redis#3666.
//   - database/sql retries a query that got driver.ErrBadConn on a cached
//     connection maxBadConnRetries times, then on a new connection
//     (DB.retry). The connector does not see database/sql's strategy, so
//     after maxBadConnRetries bad connections in a row it opens new
//     connections instead of taking idle ones, until a connection comes back
//     good.
//
// How it sits under database/sql: the pool's *sql.DB keeps no idle
// connection (SetMaxIdleConns(-1)) and has no lifetime or idle limits of
// its own, and every connection it asks the connector for is a new pickConn
// wrapping a connection taken from the queue, or a new one. When
// database/sql puts a connection back it calls IsValid, then, having no
// room to keep it, Close: a pickConn whose last IsValid answered true, and
// which was not used since (database/sql calls ResetSession before every
// reuse of a connection that was put back, see driverConn.needReset), goes
// back into the queue instead of being closed. A connection that
// database/sql discards as bad (driver.ErrBadConn, which skips IsValid) or
// that IsValid rejects is closed. When a query waits for a connection
// (MaxOpenConns reached), database/sql hands a returning connection
// straight to it, as it always does; IsValid still checks its lifetime.

// pickPool is the driver.Connector of a pool under LeastRecentlyUsed: it
// keeps the pool's idle connections in a FIFO queue. It is safe for
// concurrent use.
type pickPool struct {
	inner       driver.Connector // the driver's, or the budget's connector
	maxIdle     int              // most idle connections kept; 0: none
	lifetime    time.Duration    // ConnMaxLifetime before jitter; 0: none
	maxIdleTime time.Duration    // ConnMaxIdleTime; 0: none

	mu        sync.Mutex  // protects the fields below
	idle      []*physConn // the idle connections, idle[0] returned longest ago
	closed    bool        // set by Close: connections put back are closed
	timer     *time.Timer // fires at timerAt to close expired idle connections; nil when stopped
	timerAt   time.Time   // when timer fires; zero when no timer is set
	badStreak int         // connections discarded as bad since one came back good
	onClose   func()      // run once by Close; set before the pool is used

	// As database/sql counts them in DBStats; read by poolStats.
	maxIdleClosed     atomic.Int64 // closed when put back, the queue holding MaxIdleConns
	maxIdleTimeClosed atomic.Int64 // closed after ConnMaxIdleTime in the queue
	maxLifetimeClosed atomic.Int64 // closed past their lifetime
}

// physConn is one connection of the driver (or of the budget) while it is
// open: owned by one pickConn while database/sql holds it, else in
// pickPool.idle. Its fields are written before it is shared and while the
// pool's mutex is held or the connection is owned, and read likewise.
type physConn struct {
	conn     driver.Conn // the driver's connection, or its budgetConn
	expires  time.Time   // end of its jittered lifetime; zero: none
	returned time.Time   // when it last entered the queue
}

// newPickPool returns the connector of a pool under LeastRecentlyUsed over
// inner, with settings (defaults applied).
func newPickPool(inner driver.Connector, settings PoolSettings) *pickPool {
	p := &pickPool{inner: inner}
	if settings.MaxIdleConns > 0 {
		p.maxIdle = settings.MaxIdleConns
	}
	if settings.ConnMaxLifetime > 0 {
		p.lifetime = settings.ConnMaxLifetime
	}
	if settings.ConnMaxIdleTime > 0 {
		p.maxIdleTime = settings.ConnMaxIdleTime
	}
	return p
}

// applyPicked sets on db, the pool of a pickPool, the settings that
// database/sql keeps: MaxOpenConns. database/sql keeps no idle connection
// and closes none for its age: the pickPool does.
func applyPicked(db *sql.DB, settings PoolSettings) {
	db.SetMaxOpenConns(settings.MaxOpenConns)
	db.SetMaxIdleConns(-1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
}

// picks maps the *sql.DB of every open pool under LeastRecentlyUsed to its
// pickPool, for PoolStats. pickPool.Close (DB.Close) deletes its entry.
var picks sync.Map // *sql.DB -> *pickPool

// openPicked opens the pool of connector c under LeastRecentlyUsed.
func openPicked(c driver.Connector, settings PoolSettings) (*sql.DB, *pickPool) {
	p := newPickPool(c, settings)
	db := sql.OpenDB(p)
	applyPicked(db, settings)
	picks.Store(db, p)
	p.onClose = func() { picks.Delete(db) }
	return db, p
}

// expired reports whether pc is past its lifetime, or was idle for
// maxIdleTime, at now.
func (p *pickPool) expiredLocked(pc *physConn, now time.Time, idle bool) (bool, *atomic.Int64) {
	if !pc.expires.IsZero() && !now.Before(pc.expires) {
		return true, &p.maxLifetimeClosed
	}
	if idle && p.maxIdleTime > 0 && now.Sub(pc.returned) >= p.maxIdleTime {
		return true, &p.maxIdleTimeClosed
	}
	return false, nil
}

// Connect returns a connection for database/sql: the idle connection
// returned longest ago that is still within its limits and whose session
// resets, or else a new one. It closes the expired and bad idle connections
// it passes over.
func (p *pickPool) Connect(ctx context.Context) (driver.Conn, error) {
	for {
		pc := p.take()
		if pc == nil {
			break
		}
		// database/sql's DB.conn: a session that does not reset with
		// ErrBadConn is closed; another error is ignored.
		if r, ok := pc.conn.(driver.SessionResetter); ok {
			if err := r.ResetSession(ctx); errors.Is(err, driver.ErrBadConn) {
				pc.conn.Close()
				continue
			}
		}
		return newPickConn(p, pc), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := p.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("sqladapter: driver.Connector returned a nil connection and no error")
	}
	pc := &physConn{conn: conn}
	if p.lifetime > 0 {
		// Drawn once: (1 - lifetimeJitter, 1] x lifetime.
		cut := time.Duration(rand.Float64() * lifetimeJitter * float64(p.lifetime))
		pc.expires = time.Now().Add(p.lifetime - cut)
	}
	return newPickConn(p, pc), nil
}

// take removes and returns the idle connection returned longest ago that is
// within its limits, closing the expired ones it passes (after unlocking).
// It returns nil when there is none, or after maxBadConnRetries bad
// connections in a row.
func (p *pickPool) take() *physConn {
	var expired []*physConn
	var counters []*atomic.Int64
	var pc *physConn
	now := time.Now()
	p.mu.Lock()
	if p.badStreak < maxBadConnRetries {
		for len(p.idle) > 0 {
			c := p.idle[0]
			p.idle[0] = nil
			p.idle = p.idle[1:]
			if exp, ctr := p.expiredLocked(c, now, true); exp {
				expired = append(expired, c)
				counters = append(counters, ctr)
				continue
			}
			pc = c
			break
		}
	}
	p.mu.Unlock()
	closeExpired(expired, counters)
	return pc
}

// closeExpired closes conns, counting each in its counter.
func closeExpired(conns []*physConn, counters []*atomic.Int64) {
	for i, c := range conns {
		counters[i].Add(1)
		c.conn.Close()
	}
}

// put takes back the connection of a pickConn that database/sql closed
// after its IsValid answered true: it joins the end of the queue, unless
// the pool is closed, the queue holds maxIdle connections, or it is past
// its lifetime, in which cases it is closed.
func (p *pickPool) put(pc *physConn) {
	now := time.Now()
	p.mu.Lock()
	p.badStreak = 0
	var ctr *atomic.Int64
	switch {
	case p.closed:
	case len(p.idle) >= p.maxIdle:
		ctr = &p.maxIdleClosed
	default:
		if exp, c := p.expiredLocked(pc, now, false); exp {
			ctr = c
			break
		}
		pc.returned = now
		p.idle = append(p.idle, pc)
		p.scheduleLocked(now)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if ctr != nil {
		ctr.Add(1)
	}
	pc.conn.Close()
}

// discard closes the connection of a pickConn that database/sql closed
// without putting it back valid. bad says it discarded it as bad
// (driver.ErrBadConn), not for an IsValid that answered false.
func (p *pickPool) discard(pc *physConn, bad bool) error {
	if bad {
		p.mu.Lock()
		p.badStreak++
		p.mu.Unlock()
	}
	return pc.conn.Close()
}

// scheduleLocked sets the timer to the earliest expiry of an idle
// connection, if it is not set to an earlier one.
func (p *pickPool) scheduleLocked(now time.Time) {
	var at time.Time
	for _, c := range p.idle {
		for _, t := range []time.Time{c.expires, idleEnd(c, p.maxIdleTime)} {
			if !t.IsZero() && (at.IsZero() || t.Before(at)) {
				at = t
			}
		}
	}
	if at.IsZero() || (!p.timerAt.IsZero() && !at.Before(p.timerAt)) {
		return
	}
	p.timerAt = at
	if p.timer == nil {
		p.timer = time.AfterFunc(at.Sub(now), p.sweep)
	} else {
		p.timer.Reset(at.Sub(now))
	}
}

// idleEnd is when c, idle since c.returned, reaches maxIdleTime; zero for
// none.
func idleEnd(c *physConn, maxIdleTime time.Duration) time.Time {
	if maxIdleTime <= 0 {
		return time.Time{}
	}
	return c.returned.Add(maxIdleTime)
}

// sweep runs on the timer's goroutine: it closes the idle connections that
// are past their limits and sets the timer to the next expiry.
func (p *pickPool) sweep() {
	var expired []*physConn
	var counters []*atomic.Int64
	now := time.Now()
	p.mu.Lock()
	p.timerAt = time.Time{}
	if p.closed {
		p.mu.Unlock()
		return
	}
	kept := p.idle[:0]
	for _, c := range p.idle {
		if exp, ctr := p.expiredLocked(c, now, true); exp {
			expired = append(expired, c)
			counters = append(counters, ctr)
			continue
		}
		kept = append(kept, c)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.scheduleLocked(now)
	p.mu.Unlock()
	closeExpired(expired, counters)
}

// closeIdle closes every idle connection of the queue and returns how
// many, for the budget's reclaim. The pool keeps idle connections again
// afterwards.
func (p *pickPool) closeIdle() int64 {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	return int64(len(idle))
}

// idleCount returns the number of idle connections in the queue.
func (p *pickPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Driver returns the driver of the wrapped connector.
func (p *pickPool) Driver() driver.Driver { return p.inner.Driver() }

// Close is called by database/sql's DB.Close: it closes every idle
// connection, and every connection put back later, then the wrapped
// connector if it is an io.Closer. It is idempotent.
func (p *pickPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	onClose := p.onClose
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	if onClose != nil {
		onClose()
	}
	if cl, ok := p.inner.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// pickConn is the connection database/sql holds under LeastRecentlyUsed:
// one handing out of a physConn. forwardConn answers the methods it does
// not override.
type pickConn struct {
	forwardConn
	pool *pickPool
	pc   *physConn

	// state is what the last put of database/sql found: putValid after an
	// IsValid that answered true, putInvalid after one that answered false,
	// and inUse when handed out and after ResetSession, which database/sql
	// calls before it uses again a connection that was put back. Close puts
	// the connection back in the queue only in putValid, i.e. when
	// database/sql closes it for want of room after a put that found it
	// valid; in inUse, database/sql discards it as bad (a put with
	// driver.ErrBadConn skips IsValid).
	state  atomic.Int32
	closed atomic.Bool // set by the first Close
}

// The values of pickConn.state.
const (
	inUse int32 = iota
	putValid
	putInvalid
)

func newPickConn(p *pickPool, pc *physConn) *pickConn {
	return &pickConn{forwardConn: forwardConn{inner: pc.conn}, pool: p, pc: pc}
}

var (
	_ driver.Conn            = (*pickConn)(nil)
	_ driver.SessionResetter = (*pickConn)(nil)
	_ driver.Validator       = (*pickConn)(nil)
)

// IsValid is called by database/sql when it puts the connection back: it
// answers false past the connection's lifetime, else what the wrapped
// connection answers (under a budget, false while a connection of the
// budget is awaited: see budgetConn.IsValid).
func (c *pickConn) IsValid() bool {
	if exp := c.pc.expires; !exp.IsZero() && !time.Now().Before(exp) {
		c.pool.maxLifetimeClosed.Add(1)
		c.state.Store(putInvalid)
		return false
	}
	if !c.forwardConn.IsValid() {
		c.state.Store(putInvalid)
		return false
	}
	c.state.Store(putValid)
	return true
}

// ResetSession is called by database/sql before it uses again a connection
// that was put back: one it handed straight from one query to another
// waiting one.
func (c *pickConn) ResetSession(ctx context.Context) error {
	c.state.Store(inUse)
	return c.forwardConn.ResetSession(ctx)
}

// Close puts the connection back in the queue (see state), or closes it.
// Only the first call does anything.
func (c *pickConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	switch c.state.Load() {
	case putValid:
		c.pool.put(c.pc)
		return nil
	case putInvalid:
		return c.pool.discard(c.pc, false)
	default:
		return c.pool.discard(c.pc, true)
	}
}
