package sqladapter

import (
	"context"
	"database/sql/driver"
	"errors"
)

// forwardConn is the part of this package's driver.Conn wrappers
// (budgetConn, pickConn) that only forwards to the driver's connection.
//
// It implements every optional interface that database/sql type-asserts on
// a connection, as the well-known database/sql middlewares (XSAM/otelsql,
// ngrok/sqlmw) and the Elastic APM wrapper do. Where the driver's
// connection lacks one, it answers exactly what database/sql does when the
// interface is absent: ErrSkip for ExecerContext, QueryerContext and
// NamedValueChecker (database/sql then prepares, or uses its default
// converter), nil for Pinger and SessionResetter, true for Validator, and
// database/sql's own fallbacks (ctxutil.go) for ConnPrepareContext and
// ConnBeginTx. Statements, transactions and rows are the driver's own,
// unwrapped. A wrapper that embeds it overrides Close and whichever of
// IsValid and ResetSession it needs.
type forwardConn struct {
	inner driver.Conn
}

var (
	_ driver.Pinger             = forwardConn{}
	_ driver.SessionResetter    = forwardConn{}
	_ driver.Validator          = forwardConn{}
	_ driver.ExecerContext      = forwardConn{}
	_ driver.QueryerContext     = forwardConn{}
	_ driver.ConnPrepareContext = forwardConn{}
	_ driver.ConnBeginTx        = forwardConn{}
	_ driver.NamedValueChecker  = forwardConn{}
)

// Unwrap returns the driver's connection, for code that reaches it through
// sql.Conn.Raw.
func (c forwardConn) Unwrap() driver.Conn {
	if u, ok := c.inner.(interface{ Unwrap() driver.Conn }); ok && isWrapper(c.inner) {
		return u.Unwrap()
	}
	return c.inner
}

// isWrapper reports whether conn is one of this package's wrappers.
func isWrapper(conn driver.Conn) bool {
	switch conn.(type) {
	case *budgetConn, *pickConn:
		return true
	}
	return false
}

func (c forwardConn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }

//lint:ignore SA1019 driver.Conn requires Begin; database/sql calls BeginTx.
func (c forwardConn) Begin() (driver.Tx, error) { return c.inner.Begin() }

func (c forwardConn) IsValid() bool {
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c forwardConn) ResetSession(ctx context.Context) error {
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c forwardConn) Ping(ctx context.Context) error {
	if p, ok := c.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c forwardConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
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

func (c forwardConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
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

func (c forwardConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
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

func (c forwardConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
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

func (c forwardConn) CheckNamedValue(nv *driver.NamedValue) error {
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
