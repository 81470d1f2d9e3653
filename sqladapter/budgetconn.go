package sqladapter

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"sync/atomic"
)

// This file holds the driver.Connector and driver.Conn wrappers that take a
// connection of the budget when a connection is opened and give it back
// when the connection is closed. They are hand-written because the
// well-known database/sql middlewares (XSAM/otelsql, ngrok/sqlmw) bring
// tracing or interceptor machinery and their own dependencies for what is
// here a counter around Connect and Close.
//
// The conn wrapper implements every optional interface that database/sql
// type-asserts on a connection, through forwardConn (forwardconn.go).

// budgetConnector is the driver.Connector of one tenant's pool when the
// cache has a budget.
type budgetConnector struct {
	inner driver.Connector
	pool  *budgetPool
}

// Connect takes a connection of the budget, waiting as [budget.acquire]
// says, then opens the driver's connection. A failed or panicking Connect
// gives the budget back at once.
func (c *budgetConnector) Connect(ctx context.Context) (driver.Conn, error) {
	b := c.pool.budget
	if err := b.acquire(ctx); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			b.release()
		}
	}()
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("sqladapter: driver.Connector returned a nil connection and no error")
	}
	ok = true
	c.pool.touch()
	return &budgetConn{forwardConn: forwardConn{inner: conn}, pool: c.pool}, nil
}

// Driver returns the driver of the wrapped connector.
func (c *budgetConnector) Driver() driver.Driver { return c.inner.Driver() }

// Close closes the wrapped connector if it is an io.Closer, as database/sql
// does on DB.Close.
func (c *budgetConnector) Close() error {
	if cl, ok := c.inner.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// dsnConnector is the connector of a driver that does not implement
// driver.DriverContext, as database/sql builds it for sql.Open.
type dsnConnector struct {
	dsn    string
	driver driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.dsn) }

func (c dsnConnector) Driver() driver.Driver { return c.driver }

// budgetConn is a driver connection that holds one connection of the
// budget until it is closed. forwardConn answers the methods it does not
// override.
type budgetConn struct {
	forwardConn
	pool     *budgetPool
	released atomic.Bool // set by the first Close, which gives the budget back
}

var (
	_ driver.Conn               = (*budgetConn)(nil)
	_ driver.Pinger             = (*budgetConn)(nil)
	_ driver.SessionResetter    = (*budgetConn)(nil)
	_ driver.Validator          = (*budgetConn)(nil)
	_ driver.ExecerContext      = (*budgetConn)(nil)
	_ driver.QueryerContext     = (*budgetConn)(nil)
	_ driver.ConnPrepareContext = (*budgetConn)(nil)
	_ driver.ConnBeginTx        = (*budgetConn)(nil)
	_ driver.NamedValueChecker  = (*budgetConn)(nil)
)

// Close closes the driver's connection and gives its connection of the
// budget back, once, whatever the driver returns (database/sql drops a
// connection whose Close failed), after closeSettle: see releaseSettled.
func (c *budgetConn) Close() error {
	err := c.inner.Close()
	if c.released.CompareAndSwap(false, true) {
		c.pool.budget.releaseSettled()
	}
	return err
}

// IsValid is called by database/sql when a connection is put back in its
// pool. While a connection of the budget is awaited, it reports the
// connection invalid, so that database/sql closes it instead of keeping it
// idle and its place in the budget goes to the first waiter.
func (c *budgetConn) IsValid() bool {
	c.pool.touch()
	if c.pool.budget.b.Contended() {
		c.pool.budget.handedOver.Add(1)
		return false
	}
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *budgetConn) ResetSession(ctx context.Context) error {
	c.pool.touch()
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}
