package sqladapter_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// fakeDriverName is the database/sql name of fakeDriver.
const fakeDriverName = "rescache-fake"

func init() { sql.Register(fakeDriverName, fakeDriver{}) }

// fakeDriver is an in-memory database/sql driver for the failures a real
// server cannot be made to produce on demand. Its DSN is key=value pairs:
//
//	server=NAME     the fakeServer the connection goes to (required)
//	password=...    ignored, but repeated in every error, like a careless driver
//	fail=open       sql.Open fails (OpenConnector returns an error)
//	panic=open      OpenConnector panics with a string that repeats the DSN
//	panic=connect   Connect panics with an error that repeats the DSN
//
// Connections to a server that is down fail; a server can block connects
// until their context ends.
type fakeDriver struct{}

// fakeServers maps a server name to its *fakeServer.
var fakeServers sync.Map

// fakeServer is the state of one fake database server. Its fields are safe
// for concurrent use.
type fakeServer struct {
	name     string
	down     atomic.Bool  // connects and pings fail
	block    atomic.Bool  // connects wait for their context to end
	open     atomic.Int64 // connections open now
	peak     atomic.Int64 // most connections open at once
	connects atomic.Int64 // successful connects so far
}

// newFakeServer registers and returns a fresh server called name.
func newFakeServer(name string) *fakeServer {
	s := &fakeServer{name: name}
	fakeServers.Store(name, s)
	return s
}

// fakeDSN returns the DSN of server name with the given extra pairs.
func fakeDSN(name string, extra ...string) string {
	return strings.Join(append([]string{"server=" + name}, extra...), " ")
}

func parseFakeDSN(dsn string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Fields(dsn) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func (fakeDriver) Open(dsn string) (driver.Conn, error) {
	c, err := fakeDriver{}.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

func (fakeDriver) OpenConnector(dsn string) (driver.Connector, error) {
	p := parseFakeDSN(dsn)
	if p["panic"] == "open" {
		panic("fake: panic while opening " + dsn)
	}
	if p["fail"] == "open" {
		return nil, fmt.Errorf("fake: bad data source name %q", dsn)
	}
	v, ok := fakeServers.Load(p["server"])
	if !ok {
		return nil, fmt.Errorf("fake: no server %q in %q", p["server"], dsn)
	}
	return &fakeConnector{srv: v.(*fakeServer), dsn: dsn}, nil
}

// errFakePanic is wrapped by the error a connect with panic=connect panics
// with.
var errFakePanic = errors.New("fake: driver bug")

// fakeConnector connects to one fakeServer.
type fakeConnector struct {
	srv *fakeServer
	dsn string
}

func (c *fakeConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if parseFakeDSN(c.dsn)["panic"] == "connect" {
		panic(fmt.Errorf("fake: panic while connecting to %s: %w", c.dsn, errFakePanic))
	}
	if c.srv.block.Load() {
		<-ctx.Done()
		return nil, fmt.Errorf("fake: connect to %s: %w", c.dsn, ctx.Err())
	}
	if c.srv.down.Load() {
		return nil, fmt.Errorf("fake: connect to %s: connection refused", c.dsn)
	}
	n := c.srv.open.Add(1)
	for p := c.srv.peak.Load(); n > p && !c.srv.peak.CompareAndSwap(p, n); p = c.srv.peak.Load() {
	}
	c.srv.connects.Add(1)
	return &fakeConn{srv: c.srv}, nil
}

func (c *fakeConnector) Driver() driver.Driver { return fakeDriver{} }

// fakeConn is one connection. It answers Ping and the query "SELECT
// server" (the name of its server); it is used by one goroutine at a
// time, as database/sql guarantees.
type fakeConn struct {
	srv    *fakeServer
	closed bool
}

func (c *fakeConn) Ping(ctx context.Context) error {
	if c.srv.down.Load() {
		return driver.ErrBadConn // database/sql retries on a new connection
	}
	return nil
}

func (c *fakeConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.srv.down.Load() {
		return nil, driver.ErrBadConn
	}
	if query != "SELECT server" {
		return nil, fmt.Errorf("fake: unknown query %q", query)
	}
	return &fakeRows{vals: []string{c.srv.name}}, nil
}

func (c *fakeConn) Prepare(query string) (driver.Stmt, error) {
	return nil, errors.New("fake: Prepare is not supported")
}

func (c *fakeConn) Begin() (driver.Tx, error) {
	return nil, errors.New("fake: transactions are not supported")
}

func (c *fakeConn) Close() error {
	if !c.closed {
		c.closed = true
		c.srv.open.Add(-1)
	}
	return nil
}

type fakeRows struct {
	vals []string
	i    int
}

func (r *fakeRows) Columns() []string { return []string{"server"} }
func (r *fakeRows) Close() error      { return nil }
func (r *fakeRows) Next(dest []driver.Value) error {
	if r.i >= len(r.vals) {
		return io.EOF
	}
	dest[0] = r.vals[r.i]
	r.i++
	return nil
}
