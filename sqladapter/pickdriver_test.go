package sqladapter_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
)

// pickDriver is a fake driver for the LeastRecentlyUsed tests: it numbers
// its connections, records the resets and validations of each, fails the
// test when a connection serves two calls at once, and can make a
// connection bad. Its connections answer "SELECT id" with their number.
type pickDriver struct {
	t testing.TB // nil in benchmarks: a shared connection then panics

	mu    sync.Mutex // protects conns
	conns []*pickTestConn

	open     atomic.Int64 // connections open now
	peak     atomic.Int64 // most connections open at once
	connects atomic.Int64
}

func newPickDriver(t testing.TB) *pickDriver { return &pickDriver{t: t} }

// Connect implements driver.Connector.
func (d *pickDriver) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := d.open.Add(1)
	for p := d.peak.Load(); n > p && !d.peak.CompareAndSwap(p, n); p = d.peak.Load() {
	}
	d.mu.Lock()
	c := &pickTestConn{d: d, id: len(d.conns) + 1}
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	d.connects.Add(1)
	return c, nil
}

func (d *pickDriver) Driver() driver.Driver { return nil }

// conn returns connection number id (from 1).
func (d *pickDriver) conn(id int) *pickTestConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[id-1]
}

// all returns every connection opened so far.
func (d *pickDriver) all() []*pickTestConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*pickTestConn(nil), d.conns...)
}

// pickTestConn is one connection of a pickDriver.
type pickTestConn struct {
	d  *pickDriver
	id int

	busy      atomic.Bool  // a call is running
	closed    atomic.Bool  // Close was called
	bad       atomic.Bool  // queries fail with driver.ErrBadConn
	resetBad  atomic.Bool  // ResetSession fails with driver.ErrBadConn
	invalid   atomic.Bool  // IsValid answers false
	resets    atomic.Int64 // ResetSession calls
	queries   atomic.Int64
	validates atomic.Int64
}

// enter marks the connection busy for one call; it fails the test if
// another call runs on it, or if it is closed.
func (c *pickTestConn) enter(what string) func() {
	fail := func(format string, args ...any) {
		if c.d.t == nil {
			panic(fmt.Sprintf(format, args...))
		}
		c.d.t.Errorf(format, args...)
	}
	if !c.busy.CompareAndSwap(false, true) {
		fail("connection %d: %s while another call runs on it", c.id, what)
		return func() {}
	}
	if c.closed.Load() {
		fail("connection %d: %s after Close", c.id, what)
	}
	return func() { c.busy.Store(false) }
}

func (c *pickTestConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	defer c.enter("query")()
	if c.bad.Load() {
		return nil, driver.ErrBadConn
	}
	if query != "SELECT id" {
		return nil, fmt.Errorf("pick fake: unknown query %q", query)
	}
	c.queries.Add(1)
	return &pickRows{id: int64(c.id)}, nil
}

func (c *pickTestConn) ResetSession(ctx context.Context) error {
	defer c.enter("ResetSession")()
	c.resets.Add(1)
	if c.resetBad.Load() {
		return driver.ErrBadConn
	}
	return nil
}

func (c *pickTestConn) IsValid() bool {
	c.validates.Add(1)
	return !c.invalid.Load() && !c.bad.Load()
}

func (c *pickTestConn) Ping(ctx context.Context) error {
	defer c.enter("ping")()
	if c.bad.Load() {
		return driver.ErrBadConn
	}
	return nil
}

func (c *pickTestConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("pick fake: Prepare is not supported")
}

func (c *pickTestConn) Begin() (driver.Tx, error) {
	return nil, errors.New("pick fake: transactions are not supported")
}

func (c *pickTestConn) Close() error {
	defer c.enter("Close")()
	if c.closed.CompareAndSwap(false, true) {
		c.d.open.Add(-1)
	}
	return nil
}

type pickRows struct {
	id   int64
	done bool
}

func (r *pickRows) Columns() []string { return []string{"id"} }
func (r *pickRows) Close() error      { return nil }
func (r *pickRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	dest[0] = r.id
	r.done = true
	return nil
}
