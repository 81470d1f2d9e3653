package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// wrapped hides err behind a type of its own, as a driver or a caller's
// fmt.Errorf("...: %w") would.
type wrapped struct{ err error }

func (w wrapped) Error() string { return "wrapped" }
func (w wrapped) Unwrap() error { return w.err }

func TestIsConnectionError(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("no such table: notes"), false},
		{"no rows", sql.ErrNoRows, false},
		{"ErrBadConn", driver.ErrBadConn, true},
		{"wrapped ErrBadConn", fmt.Errorf("query: %w", driver.ErrBadConn), true},
		{"connection reset", reset, true},
		{"wrapped connection reset", wrapped{reset}, true},
		{"read deadline", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), true},
		{"context canceled", context.Canceled, false},
		{"context deadline", context.DeadlineExceeded, false},
		{"wrapped context deadline", wrapped{context.DeadlineExceeded}, false},
		{"pgconn.ErrConnClosed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), true},
		{"*pgconn.ConnectError", wrapped{&pgconn.ConnectError{}}, true},
		{"08006 connection_failure", &pgconn.PgError{Code: "08006"}, true},
		{"08001 sqlclient_unable_to_establish_sqlconnection", &pgconn.PgError{Code: "08001"}, true},
		{"57P01 admin_shutdown", wrapped{&pgconn.PgError{Code: "57P01"}}, true},
		{"57014 query_canceled", &pgconn.PgError{Code: "57014"}, false},
		{"23505 unique_violation", &pgconn.PgError{Code: "23505"}, false},
		{"42P01 undefined_table", &pgconn.PgError{Code: "42P01"}, false},
	} {
		if got := isConnectionError(tc.err); got != tc.want {
			t.Errorf("%s: isConnectionError(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestIsConnectionErrorPostgres checks the classification against what
// pgx really returns for a query on a session that the server ended
// (pg_terminate_backend: 57P01, or the socket's EOF), with
// RESCACHE_POSTGRES_DSN set.
func TestIsConnectionErrorPostgres(t *testing.T) {
	dsn := os.Getenv("RESCACHE_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("RESCACHE_POSTGRES_DSN not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx) // one session, kept out of database/sql's retries
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := db.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	var one int
	err = conn.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	if err == nil {
		t.Fatal("a query on a terminated session succeeded")
	}
	if !isConnectionError(err) {
		t.Errorf("isConnectionError(%v (%T)) = false after pg_terminate_backend", err, err)
	}
	// A failure of the query itself is not one.
	_, err = db.ExecContext(ctx, "SELECT * FROM rescache_no_such_table")
	if err == nil || isConnectionError(err) {
		t.Errorf("query of a missing table: err %v, isConnectionError %v; want an error that is not a connection error", err, isConnectionError(err))
	}
}

// faultyDriver is modernc.org/sqlite's driver with a switch per pool: a
// test breaks the pools of a database file, and every statement that they
// prepare from then on fails with the error the test chose, as the
// statements of a pool whose server went away fail. Each sql.Open gets a
// connector of its own (driver.DriverContext), so a pool opened after the
// break works.
type faultyDriver struct {
	base driver.Driver
	mu   sync.Mutex
	live map[*faultyConnector]struct{} // connectors not closed yet
}

// faultySQLite registers faultyDriver as "faultysqlite" once.
var faultySQLite = sync.OnceValue(func() *faultyDriver {
	db, err := sql.Open("sqlite", "")
	if err != nil {
		panic(err)
	}
	d := &faultyDriver{base: db.Driver(), live: map[*faultyConnector]struct{}{}}
	db.Close()
	sql.Register("faultysqlite", d)
	return d
})

func (d *faultyDriver) Open(name string) (driver.Conn, error) {
	return nil, errors.New("faultysqlite: open through a connector")
}

func (d *faultyDriver) OpenConnector(name string) (driver.Connector, error) {
	c := &faultyConnector{d: d, dsn: name}
	d.mu.Lock()
	d.live[c] = struct{}{}
	d.mu.Unlock()
	return c, nil
}

// breakPools makes every open pool of file fail its statements with err
// (nil mends them), and returns how many pools it changed.
func (d *faultyDriver) breakPools(file string, err error) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for c := range d.live {
		if strings.Contains(c.dsn, file) {
			c.fault.Store(&err)
			n++
		}
	}
	return n
}

type faultyConnector struct {
	d     *faultyDriver
	dsn   string
	fault atomic.Pointer[error]
}

func (c *faultyConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.base.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &faultyConn{Conn: conn, c: c}, nil
}

func (c *faultyConnector) Driver() driver.Driver { return c.d }

// Close is called by sql.DB.Close.
func (c *faultyConnector) Close() error {
	c.d.mu.Lock()
	delete(c.d.live, c)
	c.d.mu.Unlock()
	return nil
}

// faultyConn exposes only driver.Conn, so that database/sql prepares
// every statement through Prepare.
type faultyConn struct {
	driver.Conn
	c *faultyConnector
}

func (c *faultyConn) Prepare(query string) (driver.Stmt, error) {
	if err := c.c.fault.Load(); err != nil && *err != nil {
		return nil, *err
	}
	return c.Conn.Prepare(query)
}

// TestDiscardBrokenPool drives the server over real HTTP with a pool whose
// connections break: a query that fails with a connection error is
// answered 503 with Retry-After, its pool is discarded and closed, and the
// next request succeeds on a fresh pool of the same database. A query that
// fails otherwise is answered 500 and keeps its pool, and another tenant's
// pool is never touched.
func TestDiscardBrokenPool(t *testing.T) {
	fd := faultySQLite()
	dir := t.TempDir()
	s, err := NewServer(Config{DataDir: dir, sqliteDriver: "faultysqlite"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	get := func(tenant string) (*http.Response, string) {
		t.Helper()
		resp, err := ts.Client().Get(ts.URL + "/t/" + tenant + "/notes")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, tenant := range []string{"acme", "globex"} {
		resp, err := ts.Client().Post(ts.URL+"/t/"+tenant+"/notes", "application/json", strings.NewReader(`{"body": "kept"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %s", tenant, resp.Status)
		}
	}
	acmeFile := filepath.Join(dir, "acme.db")
	old, ok := s.Tenants().Peek("acme")
	if !ok {
		t.Fatal("acme's pool is not cached after its POST")
	}
	globex, _ := s.Tenants().Peek("globex")

	// A query that fails for another reason keeps the pool.
	if n := fd.breakPools(acmeFile, errors.New("SQL logic error: no such table: notes")); n != 1 {
		t.Fatalf("acme has %d open pools, want 1", n)
	}
	if resp, body := get("acme"); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("GET acme with a failing query: %s %s, want 500", resp.Status, body)
	}
	if cur, _ := s.Tenants().Peek("acme"); cur != old {
		t.Fatal("a query error that is no connection error replaced acme's pool")
	}

	// A connection reset discards it.
	fd.breakPools(acmeFile, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})
	resp, body := get("acme")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "database connection lost") {
		t.Fatalf("GET acme with a reset connection: %s (Retry-After %q) %q; want 503, Retry-After 1, database connection lost",
			resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if strings.Contains(body, "reset") || strings.Contains(body, "tcp") {
		t.Errorf("the 503 shows the cause: %q", body)
	}
	if _, ok := s.Tenants().Peek("acme"); ok {
		t.Error("acme's broken pool is still cached after the 503")
	}
	// The request held the only lease: Discard closed the pool on its way
	// out, before the answer was written.
	if err := old.Ping(); err == nil || !strings.Contains(err.Error(), "database is closed") {
		t.Errorf("the discarded pool's Ping = %v, want sql: database is closed", err)
	}

	// The next request opens a fresh pool of the same file.
	resp, body = get("acme")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET acme after the discard: %s %s", resp.Status, body)
	}
	var notes []note
	if err := json.Unmarshal([]byte(body), &notes); err != nil || len(notes) != 1 || notes[0].Body != "kept" {
		t.Errorf("GET acme after the discard = %s (%v), want the note written before", body, err)
	}
	if cur, ok := s.Tenants().Peek("acme"); !ok || cur == old {
		t.Errorf("acme's pool after the discard: cached %v, the old one %v", ok, cur == old)
	}
	if cur, _ := s.Tenants().Peek("globex"); cur != globex {
		t.Error("globex's pool changed")
	}
	if resp, body := get("globex"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET globex: %s %s", resp.Status, body)
	}

	var st statsJSON
	resp2, err := ts.Client().Get(ts.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if err := json.NewDecoder(resp2.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.EvictionsByReason["discarded"] != 1 || st.Builds != 3 || st.Leased != 0 {
		t.Errorf("/stats: evictions %v, builds %d, leased %d; want 1 discarded, 3 builds (acme twice, globex), 0 leased",
			st.EvictionsByReason, st.Builds, st.Leased)
	}
}
