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
// type-asserts on a connection, as those middlewares and the Elastic APM
// wrapper do. Where the driver's connection lacks one, the wrapper answers
// exactly what database/sql does when the interface is absent: ErrSkip for
// ExecerContext, QueryerContext and NamedValueChecker (database/sql then
// prepares, or uses its default converter), nil for Pinger and
// SessionResetter, true for Validator, and database/sql's own fallbacks
// (ctxutil.go) for ConnPrepareContext and ConnBeginTx. Statements,
// transactions and rows are the driver's own, unwrapped.

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
	return &budgetConn{inner: conn, pool: c.pool}, nil
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
// budget until it is closed.
type budgetConn struct {
	inner    driver.Conn
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

// Unwrap returns the driver's connection, for code that reaches it through
// sql.Conn.Raw.
func (c *budgetConn) Unwrap() driver.Conn { return c.inner }

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

func (c *budgetConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }

//lint:ignore SA1019 driver.Conn requires Begin; database/sql calls BeginTx.
func (c *budgetConn) Begin() (driver.Tx, error) { return c.inner.Begin() }

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

func (c *budgetConn) Ping(ctx context.Context) error {
	if p, ok := c.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *budgetConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := c.inner.(driver.ExecerContext); ok {
		return e.ExecContext(ctx, query, args)
	}
	//lint:ignore SA1019 database/sql uses a driver's Execer when it lacks ExecerContext.
	e, ok := c.inner.(driver.Execer)
	if !ok {
		return nil, driver.ErrSkip
	}
	dargs, err := namedValueToValue(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return e.Exec(query, dargs)
}

func (c *budgetConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := c.inner.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	//lint:ignore SA1019 database/sql uses a driver's Queryer when it lacks QueryerContext.
	q, ok := c.inner.(driver.Queryer)
	if !ok {
		return nil, driver.ErrSkip
	}
	dargs, err := namedValueToValue(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return q.Query(query, dargs)
}

func (c *budgetConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	si, err := c.inner.Prepare(query)
	if err == nil && ctx.Err() != nil {
		si.Close()
		return nil, ctx.Err()
	}
	return si, err
}

func (c *budgetConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.inner.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	// database/sql's messages, for a driver without BeginTx.
	if opts.Isolation != driver.IsolationLevel(0) {
		return nil, errors.New("sql: driver does not support non-default isolation level")
	}
	if opts.ReadOnly {
		return nil, errors.New("sql: driver does not support read-only transactions")
	}
	//lint:ignore SA1019 the fallback of database/sql for a driver without BeginTx.
	tx, err := c.inner.Begin()
	if err == nil && ctx.Err() != nil {
		tx.Rollback()
		return nil, ctx.Err()
	}
	return tx, err
}

func (c *budgetConn) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := c.inner.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// namedValueToValue is database/sql's conversion for a driver without the
// context interfaces, which takes no named parameters.
func namedValueToValue(named []driver.NamedValue) ([]driver.Value, error) {
	dargs := make([]driver.Value, len(named))
	for n, param := range named {
		if len(param.Name) > 0 {
			return nil, errors.New("sql: driver does not support the use of Named Parameters")
		}
		dargs[n] = param.Value
	}
	return dargs, nil
}
