package sqladapter

import (
	"context"
	"database/sql/driver"
	"errors"
	rbudget "github.com/rescache/rescache/budget"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// bareConn implements only driver.Conn, with Execer and Queryer neither.
type bareConn struct{ calls []string }

func (c *bareConn) Prepare(string) (driver.Stmt, error) {
	c.calls = append(c.calls, "Prepare")
	return bareStmt{}, nil
}
func (c *bareConn) Close() error { c.calls = append(c.calls, "Close"); return nil }
func (c *bareConn) Begin() (driver.Tx, error) {
	c.calls = append(c.calls, "Begin")
	return bareTx{}, nil
}

type bareStmt struct{}

func (bareStmt) Close() error                               { return nil }
func (bareStmt) NumInput() int                              { return -1 }
func (bareStmt) Exec([]driver.Value) (driver.Result, error) { return driver.RowsAffected(1), nil }
func (bareStmt) Query([]driver.Value) (driver.Rows, error)  { return nil, errors.New("bare: no rows") }

type bareTx struct{}

func (bareTx) Commit() error   { return nil }
func (bareTx) Rollback() error { return nil }

// fullConn implements every optional interface and records which was
// called.
type fullConn struct {
	bareConn
	valid bool
}

func (c *fullConn) Ping(context.Context) error {
	c.calls = append(c.calls, "Ping")
	return errors.New("full: ping")
}
func (c *fullConn) ResetSession(context.Context) error {
	c.calls = append(c.calls, "ResetSession")
	return driver.ErrBadConn
}
func (c *fullConn) IsValid() bool { c.calls = append(c.calls, "IsValid"); return c.valid }
func (c *fullConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	c.calls = append(c.calls, "ExecContext")
	return driver.RowsAffected(2), nil
}
func (c *fullConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.calls = append(c.calls, "QueryContext")
	return nil, errors.New("full: query")
}
func (c *fullConn) PrepareContext(context.Context, string) (driver.Stmt, error) {
	c.calls = append(c.calls, "PrepareContext")
	return bareStmt{}, nil
}
func (c *fullConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	c.calls = append(c.calls, "BeginTx")
	return bareTx{}, nil
}
func (c *fullConn) CheckNamedValue(*driver.NamedValue) error {
	c.calls = append(c.calls, "CheckNamedValue")
	return driver.ErrRemoveArgument
}

type oneConnector struct{ conn driver.Conn }

func (c oneConnector) Connect(context.Context) (driver.Conn, error) { return c.conn, nil }
func (c oneConnector) Driver() driver.Driver                        { return nil }

// newLocalBudget returns the budget of a cache over a Local budget of max
// places.
func newLocalBudget(t *testing.T, max int) *budget {
	t.Helper()
	l, err := rbudget.NewLocal(max)
	if err != nil {
		t.Fatal(err)
	}
	return newBudget(l)
}

func held(b *budget) int { return b.b.Stats().Held }

func connectUnderBudget(t *testing.T, inner driver.Conn) (*budgetConn, *budget) {
	t.Helper()
	b := newLocalBudget(t, 1)
	p := &budgetPool{budget: b}
	conn, err := (&budgetConnector{inner: oneConnector{inner}, pool: p}).Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return conn.(*budgetConn), b
}

// Where the driver's connection lacks an optional interface, the wrapper
// answers what database/sql does when the interface is absent.
func TestBudgetConnWithoutOptionalInterfaces(t *testing.T) {
	inner := &bareConn{}
	c, _ := connectUnderBudget(t, inner)
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping = %v; want nil", err)
	}
	if err := c.ResetSession(ctx); err != nil {
		t.Errorf("ResetSession = %v; want nil", err)
	}
	if !c.IsValid() {
		t.Errorf("IsValid = false; want true")
	}
	if _, err := c.ExecContext(ctx, "x", nil); err != driver.ErrSkip {
		t.Errorf("ExecContext = %v; want driver.ErrSkip", err)
	}
	if _, err := c.QueryContext(ctx, "x", nil); err != driver.ErrSkip {
		t.Errorf("QueryContext = %v; want driver.ErrSkip", err)
	}
	if err := c.CheckNamedValue(&driver.NamedValue{}); err != driver.ErrSkip {
		t.Errorf("CheckNamedValue = %v; want driver.ErrSkip", err)
	}
	if _, err := c.PrepareContext(ctx, "x"); err != nil {
		t.Errorf("PrepareContext = %v", err)
	}
	if _, err := c.BeginTx(ctx, driver.TxOptions{}); err != nil {
		t.Errorf("BeginTx = %v", err)
	}
	if _, err := c.BeginTx(ctx, driver.TxOptions{ReadOnly: true}); err == nil {
		t.Errorf("BeginTx(ReadOnly) = nil; want database/sql's error for a driver without BeginTx")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.PrepareContext(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("PrepareContext(cancelled) = %v; want context.Canceled", err)
	}
	want := []string{"Prepare", "Begin", "Prepare"}
	if !slices.Equal(inner.calls, want) {
		t.Errorf("driver calls = %q; want %q", inner.calls, want)
	}
	if c.Unwrap() != driver.Conn(inner) {
		t.Errorf("Unwrap did not return the driver's connection")
	}
}

func TestBudgetConnForwardsOptionalInterfaces(t *testing.T) {
	inner := &fullConn{valid: true}
	c, _ := connectUnderBudget(t, inner)
	ctx := context.Background()
	_ = c.Ping(ctx)
	_ = c.ResetSession(ctx)
	_ = c.IsValid()
	_, _ = c.ExecContext(ctx, "x", nil)
	_, _ = c.QueryContext(ctx, "x", nil)
	_, _ = c.PrepareContext(ctx, "x")
	_, _ = c.BeginTx(ctx, driver.TxOptions{ReadOnly: true})
	_ = c.CheckNamedValue(&driver.NamedValue{})
	want := []string{"Ping", "ResetSession", "IsValid", "ExecContext", "QueryContext", "PrepareContext", "BeginTx", "CheckNamedValue"}
	if !slices.Equal(inner.calls, want) {
		t.Errorf("driver calls = %q; want %q", inner.calls, want)
	}
	inner.valid = false
	if c.IsValid() {
		t.Errorf("IsValid = true with the driver's false")
	}
}

// Close gives the budget back once, however often it is called.
func TestBudgetConnCloseReleasesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, b := connectUnderBudget(t, &bareConn{})
		if n := held(b); n != 1 {
			t.Fatalf("held = %d after Connect; want 1", n)
		}
		c.Close()
		c.Close()
		if n := held(b); n != 1 {
			t.Errorf("held = %d at once after Close; want 1 until the session has ended", n)
		}
		time.Sleep(closeSettle)
		synctest.Wait()
		if n := held(b); n != 0 {
			t.Errorf("held = %d after two Closes; want 0", n)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if b.b.Acquire(context.Background()) != nil || b.b.Acquire(ctx) == nil {
			t.Errorf("the budget does not have exactly one free place")
		}
	})
}

// A driver with neither ExecerContext nor Execer works through database/sql
// under a budget: database/sql prepares when the wrapper answers ErrSkip.
func TestBudgetBareDriverThroughDatabaseSQL(t *testing.T) {
	synctest.Test(t, testBareDriverThroughDatabaseSQL)
}

func testBareDriverThroughDatabaseSQL(t *testing.T) {
	inner := &bareConn{}
	b := newLocalBudget(t, 1)
	p := b.open(oneConnector{inner}, DefaultPoolSettings())
	res, err := p.db.Exec("UPDATE x")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Errorf("RowsAffected = %d; want 1", n)
	}
	if err := p.db.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(closeSettle)
	synctest.Wait()
	if n := held(b); n != 0 {
		t.Errorf("held = %d after DB.Close; want 0", n)
	}
}
