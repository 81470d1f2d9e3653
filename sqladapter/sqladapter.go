package sqladapter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rescache/rescache"
	rbudget "github.com/rescache/rescache/budget"
)

// Options configures [New]. Set either Driver and DSN, or Connector.
type Options[K comparable] struct {
	// Driver is the name of a registered database/sql driver ("pgx",
	// "mysql", "sqlite", ...). The program imports the driver package.
	// [New] fails when no driver of that name is registered.
	//
	// default: none; required unless Connector is set.
	Driver string

	// DSN returns the data source name of a tenant. It is called once per
	// build, under the build's context. An error, or an empty string, fails
	// the build.
	//
	// default: none; required with Driver.
	DSN func(ctx context.Context, key K) (string, error)

	// Connector returns the driver.Connector of a tenant, opened with
	// [sql.OpenDB]. Use it instead of Driver and DSN to configure a driver
	// in code (TLS, credentials from a secret store, hooks).
	//
	// default: nil.
	Connector func(ctx context.Context, key K) (driver.Connector, error)

	// Pool returns the pool settings of a tenant: a large tenant may get 50
	// connections, a trial tenant 2. A zero field of the result takes the
	// figure of [DefaultPoolSettings].
	//
	// default: nil, DefaultPoolSettings for every tenant.
	Pool func(key K) PoolSettings

	// PingTimeout bounds the ping that checks a new pool before it is
	// cached. The build's own context (Cache.BuildTimeout) may end it
	// sooner.
	//
	// default: 0, meaning 5s.
	PingTimeout time.Duration

	// Init, if set, runs on a new pool after its ping and before it is
	// cached, for example to create a tenant's schema. An error closes the
	// pool and fails the build.
	//
	// default: nil.
	Init func(ctx context.Context, key K, db *sql.DB) error

	// HealthCheck, when true and Cache.HealthCheck is nil, sets
	// Cache.HealthCheck to a ping of the tenant's pool: the cache pings
	// idle pools every Cache.HealthCheckInterval (default 30s), each within
	// Cache.HealthCheckTimeout (default 5s), and evicts a pool whose ping
	// fails. A Cache.HealthCheck set by the caller is kept as it is.
	//
	// default: false, no health checks.
	HealthCheck bool

	// MaxTotalConns is the most connections that all pools of the cache
	// together hold open at once, counting pools that were evicted and
	// are still draining (closed once their last lease is released). Set
	// it below what the database server allows the application (for
	// PostgreSQL, max_connections minus superuser_reserved_connections,
	// minus what other clients need), so that a burst of tenants cannot
	// exhaust the server whatever MaxEntries and each tenant's
	// MaxOpenConns are.
	//
	// A connection is counted from the moment its pool starts opening it
	// until 10ms after database/sql closes it (the server's teardown). When
	// the budget is full, opening a connection first closes the idle
	// connections of the least recently used tenant that has any, then
	// waits, first come first served, until a connection is closed; while anyone waits, connections put
	// back in a pool are closed instead of kept idle. The wait honours the
	// context of the query (or of the build's ping); when that context
	// ends, the query fails with an error that matches [ErrBudgetWait] and
	// the context's error. The package documentation describes the
	// mechanism.
	//
	// A request that holds a connection while it needs a second one, from
	// its own pool or another tenant's (a transaction open while it reads
	// through the pool, or a query under one tenant's rows that asks
	// another tenant), can deadlock: once every connection of the budget
	// is held by such requests, each waits for a connection that only the
	// others can free. database/sql documents the same for one pool and
	// MaxOpenConns; the budget extends it across tenants. Give such
	// requests a context deadline, so that the deadlock ends in
	// ErrBudgetWait errors, or do not hold a connection while asking for
	// another.
	//
	// With a budget, connections of the driver are wrapped: code that
	// reaches a driver connection through sql.Conn.Raw gets a wrapper whose
	// Unwrap() driver.Conn method returns the driver's own.
	//
	// default: 0, no budget: the cache holds at most MaxEntries (or an
	// unbounded number of) pools times each pool's MaxOpenConns.
	MaxTotalConns int

	// Budget, instead of MaxTotalConns, is the budget the pools of the cache
	// take their connections from, with the mechanism MaxTotalConns
	// describes: a [github.com/rescache/rescache/budget.Local] shared with other caches of the process,
	// or a fleet budget (package github.com/rescache/rescache/budget/redisbudget) that bounds every process of
	// a fleet together. The cache registers a reclaimer with it (the idle
	// connections of its least recently used pool) for as long as the cache
	// is reachable. Setting both Budget and MaxTotalConns is an error.
	//
	// default: nil, MaxTotalConns decides.
	Budget rbudget.Budget

	// Cache configures the cache: MaxEntries, IdleTimeout, BuildTimeout,
	// ErrorTTL, hooks. KeyString, if set, also formats tenants in errors.
	// Cache.Close defaults to closing the pool.
	//
	// default: the zero rescache.Options, an unbounded cache.
	Cache rescache.Options[K, *sql.DB]
}

// PoolSettings are the limits of one tenant's pool, applied with the
// [sql.DB] setters of the same names. A zero field means the figure of
// [DefaultPoolSettings]; a negative field means what a value <= 0 means to
// database/sql: no limit on open connections, no idle connection kept, no
// maximum idle time or lifetime.
type PoolSettings struct {
	// MaxOpenConns bounds the connections open at once, in use or idle.
	MaxOpenConns int
	// MaxIdleConns bounds the idle connections kept for reuse.
	MaxIdleConns int
	// ConnMaxLifetime closes a connection this long after it was opened.
	ConnMaxLifetime time.Duration
	// ConnMaxIdleTime closes a connection idle for this long.
	ConnMaxIdleTime time.Duration
	// Pick says which idle connection a query gets: [MostRecentlyUsed],
	// database/sql's own pool, or [LeastRecentlyUsed], which uses every
	// idle connection in turn (for replicas behind a TCP load balancer).
	// Under LeastRecentlyUsed the limits above keep their meaning, each
	// connection's lifetime is drawn once in (0.9, 1] x ConnMaxLifetime,
	// and some fields of the pool's own sql.DBStats change meaning
	// ([PoolStats] corrects them): see the package documentation. Another
	// value fails the build.
	//
	// default: MostRecentlyUsed.
	Pick Pick
}

// Figures of [DefaultPoolSettings]; the package documentation says why.
const (
	DefaultMaxOpenConns    = 10
	DefaultMaxIdleConns    = 2
	DefaultConnMaxLifetime = 30 * time.Minute
	DefaultConnMaxIdleTime = 5 * time.Minute

	// DefaultPingTimeout is the default of [Options.PingTimeout].
	DefaultPingTimeout = 5 * time.Second
)

// DefaultPoolSettings returns the pool settings used for a tenant when
// [Options.Pool] is nil, and for each zero field of its result:
// MaxOpenConns 10, MaxIdleConns 2, ConnMaxLifetime 30m, ConnMaxIdleTime 5m.
// They suit a process that holds many tenant pools at once; the package
// documentation explains each figure.
func DefaultPoolSettings() PoolSettings {
	return PoolSettings{
		MaxOpenConns:    DefaultMaxOpenConns,
		MaxIdleConns:    DefaultMaxIdleConns,
		ConnMaxLifetime: DefaultConnMaxLifetime,
		ConnMaxIdleTime: DefaultConnMaxIdleTime,
	}
}

// withDefaults returns s with each zero field set to its default.
func (s PoolSettings) withDefaults() PoolSettings {
	d := DefaultPoolSettings()
	if s.MaxOpenConns == 0 {
		s.MaxOpenConns = d.MaxOpenConns
	}
	if s.MaxIdleConns == 0 {
		s.MaxIdleConns = d.MaxIdleConns
	}
	if s.ConnMaxLifetime == 0 {
		s.ConnMaxLifetime = d.ConnMaxLifetime
	}
	if s.ConnMaxIdleTime == 0 {
		s.ConnMaxIdleTime = d.ConnMaxIdleTime
	}
	return s
}

// apply sets s on db. database/sql reads a value <= 0 as "no limit" (or "no
// idle connection" for MaxIdleConns), which is what a negative field means.
func (s PoolSettings) apply(db *sql.DB) {
	db.SetMaxOpenConns(s.MaxOpenConns)
	db.SetMaxIdleConns(s.MaxIdleConns)
	db.SetConnMaxLifetime(s.ConnMaxLifetime)
	db.SetConnMaxIdleTime(s.ConnMaxIdleTime)
}

// New returns a cache of one *sql.DB per tenant. Its build function opens
// the tenant's pool, applies the tenant's [PoolSettings], pings the pool,
// runs [Options.Init], and returns an [*Error] if any step fails, after
// closing the pool. Evicting a tenant closes its pool once its last lease
// is released. Call Close or Shutdown on the cache to close every pool.
//
// New returns an error when neither or both of Driver+DSN and Connector are
// set, when Driver names no registered driver, when PingTimeout is
// negative, or when rescache.New rejects opts.Cache. New does not modify
// opts.
func New[K comparable](opts Options[K]) (*rescache.Cache[K, *sql.DB], error) {
	a, err := newAdapter(opts)
	if err != nil {
		return nil, err
	}
	co := opts.Cache
	if co.Close == nil {
		co.Close = func(_ K, db *sql.DB) error { return db.Close() }
	}
	if opts.HealthCheck && co.HealthCheck == nil {
		co.HealthCheck = func(ctx context.Context, _ K, db *sql.DB) error { return db.PingContext(ctx) }
	}
	if a.budget != nil {
		closePool := co.Close
		co.Close = func(key K, db *sql.DB) error {
			err := closePool(key, db)
			a.budget.forget(db)
			return err
		}
	}
	c, err := rescache.New(a.build, &co)
	if err != nil {
		return nil, fmt.Errorf("sqladapter: %w", err)
	}
	if a.budget != nil {
		registerBudget(c, a.budget)
	}
	return c, nil
}

// adapter holds the validated options of one cache; it is read-only after
// newAdapter and safe for concurrent builds.
type adapter[K comparable] struct {
	driver      string
	dsn         func(context.Context, K) (string, error)
	connector   func(context.Context, K) (driver.Connector, error)
	pool        func(K) PoolSettings
	pingTimeout time.Duration
	init        func(context.Context, K, *sql.DB) error
	keyString   func(K) string
	budget      *budget // nil without Options.MaxTotalConns or Options.Budget

	// drv is the driver named by Options.Driver, found by the first build
	// that opens a pool under a budget or LeastRecentlyUsed.
	drv atomic.Pointer[driver.Driver]
}

func newAdapter[K comparable](opts Options[K]) (*adapter[K], error) {
	switch {
	case opts.Connector != nil && (opts.DSN != nil || opts.Driver != ""):
		return nil, errors.New("sqladapter: set either Options.Driver and Options.DSN, or Options.Connector, not both")
	case opts.Connector == nil && opts.Driver == "" && opts.DSN == nil:
		return nil, errors.New("sqladapter: Options.Driver and Options.DSN, or Options.Connector, are required")
	case opts.Connector == nil && opts.Driver == "":
		return nil, errors.New("sqladapter: Options.Driver is empty (Options.DSN is set)")
	case opts.Connector == nil && opts.DSN == nil:
		return nil, fmt.Errorf("sqladapter: Options.DSN is nil (Options.Driver is %q)", opts.Driver)
	}
	if opts.Connector == nil && !slices.Contains(sql.Drivers(), opts.Driver) {
		return nil, fmt.Errorf("sqladapter: unknown driver %q (registered: %q; is the driver package imported?)", opts.Driver, sql.Drivers())
	}
	if opts.MaxTotalConns < 0 {
		return nil, fmt.Errorf("sqladapter: Options.MaxTotalConns is negative (%d)", opts.MaxTotalConns)
	}
	if opts.MaxTotalConns > 0 && opts.Budget != nil {
		return nil, fmt.Errorf("sqladapter: set either Options.MaxTotalConns (%d) or Options.Budget, not both", opts.MaxTotalConns)
	}
	if opts.PingTimeout < 0 {
		return nil, fmt.Errorf("sqladapter: Options.PingTimeout is negative (%v)", opts.PingTimeout)
	}
	a := &adapter[K]{
		driver:      opts.Driver,
		dsn:         opts.DSN,
		connector:   opts.Connector,
		pool:        opts.Pool,
		pingTimeout: opts.PingTimeout,
		init:        opts.Init,
		keyString:   opts.Cache.KeyString,
	}
	switch {
	case opts.Budget != nil:
		a.budget = newBudget(opts.Budget)
	case opts.MaxTotalConns > 0:
		local, err := rbudget.NewLocal(opts.MaxTotalConns)
		if err != nil {
			return nil, fmt.Errorf("sqladapter: %w", err)
		}
		a.budget = newBudget(local)
	}
	if a.pingTimeout == 0 {
		a.pingTimeout = DefaultPingTimeout
	}
	if a.keyString == nil {
		a.keyString = func(k K) string { return fmt.Sprint(k) }
	}
	return a, nil
}

// build opens, configures, pings and initialises the pool of key. On any
// failure it closes what it opened and returns an *Error.
//
// A panic in any step (Options.Pool, Options.DSN, Options.Connector, the
// driver while the pool opens or pings, Options.Init) is recovered here
// rather than by the cache, so that the pool is closed and the error is an
// *Error whose text is redacted like any other: see panicError. A
// runtime.Goexit in a step is not stopped, but it closes the pool too.
func (a *adapter[K]) build(ctx context.Context, key K) (_ *sql.DB, err error) {
	st := &buildStep{op: "pool"}
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		if st.db != nil {
			a.closeFailed(st.db)
		}
		if r != nil {
			err = a.panicError(key, st.op, st.dsn, r)
		}
		// r == nil: a Goexit, which goes on unwinding.
	}()
	db, err := a.buildSteps(ctx, key, st)
	returned = true
	return db, err
}

// buildStep records how far a build got, for the recovery of a panic: the
// step running, the DSN once known, the pool once opened.
type buildStep struct {
	op  string  // the Error.Op of the step running
	dsn string  // the tenant's DSN, "" before Options.DSN returned or with a Connector
	db  *sql.DB // the pool, once opened; nil before, and after a failure closed it
}

func (a *adapter[K]) buildSteps(ctx context.Context, key K, st *buildStep) (*sql.DB, error) {
	settings := DefaultPoolSettings()
	if a.pool != nil {
		settings = a.pool(key).withDefaults()
	}
	if settings.Pick != MostRecentlyUsed && settings.Pick != LeastRecentlyUsed {
		return nil, a.errorf(key, "pool", "", fmt.Errorf("unknown PoolSettings.Pick %v", settings.Pick))
	}
	db, err := a.open(ctx, key, settings, st)
	if err != nil {
		return nil, err
	}
	fail := func(op string, err error) (*sql.DB, error) {
		st.db = nil
		a.closeFailed(db)
		return nil, a.errorf(key, op, st.dsn, err)
	}

	st.op = "ping"
	pctx, cancel := context.WithTimeout(ctx, a.pingTimeout)
	err = db.PingContext(pctx)
	cancel()
	if err != nil {
		return fail("ping", err)
	}
	if a.init != nil {
		st.op = "init"
		if err := a.init(ctx, key, db); err != nil {
			return fail("init", err)
		}
	}
	return db, nil
}

// closeFailed closes the pool of a failed build and takes it out of the
// budget.
func (a *adapter[K]) closeFailed(db *sql.DB) {
	// The build's error is the one to report; a failure to close a pool
	// that never served a query adds nothing to it.
	_ = db.Close()
	if a.budget != nil {
		a.budget.forget(db)
	}
}

// panicError returns the *Error of a build step op that panicked with r:
// its cause is a *rescache.PanicError (so that errors.As finds it, and the
// cache does not remember it under ErrorTTL, as it does not remember the
// panics it recovers itself), whose Value is r with the passwords of dsn
// masked wherever r's text holds one. The text of the *Error names the
// tenant through KeyString and the panic value, masked.
func (a *adapter[K]) panicError(key K, op, dsn string, r any) *Error {
	pe := &rescache.PanicError{Key: key, Value: redactValue(r, dsn), Stack: debug.Stack()}
	return &Error{Tenant: a.keyString(key), Op: op, Err: &panicCause{pe: pe}}
}

// panicCause is the cause of an *Error for a panic: its text is the panic
// value's (the PanicError's own text names the key with fmt.Sprint, not
// KeyString), and it unwraps to the PanicError.
type panicCause struct{ pe *rescache.PanicError }

func (p *panicCause) Error() string { return fmt.Sprintf("panic: %v", p.pe.Value) }

func (p *panicCause) Unwrap() error { return p.pe }

// redactValue returns the panic value r, or, when its text holds a password
// of dsn, its text masked: an error becomes an error that answers errors.Is
// like it (see redactedError), any other value a string.
func redactValue(r any, dsn string) any {
	if dsn == "" {
		return r
	}
	text := fmt.Sprint(r)
	red := redactText(text, dsn)
	if red == text {
		return r
	}
	if err, ok := r.(error); ok {
		return &redactedError{msg: red, err: err}
	}
	return red
}

// open returns the tenant's new, unconnected pool with settings applied,
// and records in st the step it runs, the DSN it opened the pool with and
// the pool. Under a budget the pool's connector is wrapped so that its
// connections are counted; under LeastRecentlyUsed, so that it keeps the
// idle connections.
func (a *adapter[K]) open(ctx context.Context, key K, settings PoolSettings, st *buildStep) (*sql.DB, error) {
	if a.connector != nil {
		st.op = "connector"
		c, err := a.connector(ctx, key)
		if err != nil {
			return nil, a.errorf(key, "connector", "", err)
		}
		if c == nil {
			return nil, a.errorf(key, "connector", "", errors.New("Options.Connector returned a nil driver.Connector"))
		}
		st.db = a.openDB(c, settings)
		return st.db, nil
	}
	st.op = "dsn"
	dsn, err := a.dsn(ctx, key)
	if err != nil {
		return nil, a.errorf(key, "dsn", dsn, err)
	}
	if dsn == "" {
		return nil, a.errorf(key, "dsn", "", errors.New("Options.DSN returned an empty data source name"))
	}
	st.op, st.dsn = "open", dsn
	if a.budget == nil && settings.Pick == MostRecentlyUsed {
		db, err := sql.Open(a.driver, dsn)
		if err != nil {
			return nil, a.errorf(key, "open", dsn, err)
		}
		st.db = db
		settings.apply(db)
		return db, nil
	}
	c, err := a.dsnConnector(dsn)
	if err != nil {
		return nil, a.errorf(key, "open", dsn, err)
	}
	st.db = a.openDB(c, settings)
	return st.db, nil
}

// openDB opens the pool of connector c with settings applied, under the
// budget if there is one.
func (a *adapter[K]) openDB(c driver.Connector, settings PoolSettings) *sql.DB {
	if a.budget != nil {
		return a.budget.open(c, settings).db
	}
	if settings.Pick == LeastRecentlyUsed {
		db, _ := openPicked(c, settings)
		return db
	}
	db := sql.OpenDB(c)
	settings.apply(db)
	return db
}

// dsnConnector returns the connector of dsn that sql.Open would use: the
// driver's own if it implements driver.DriverContext, else one that calls
// its Open. database/sql has no lookup of a driver by name, so the first
// call finds the driver through a pool opened and closed at once.
func (a *adapter[K]) dsnConnector(dsn string) (driver.Connector, error) {
	d := a.drv.Load()
	if d == nil {
		db, err := sql.Open(a.driver, dsn)
		if err != nil {
			return nil, err
		}
		drv := db.Driver()
		// The pool never connected: closing it only stops its opener.
		_ = db.Close()
		a.drv.Store(&drv)
		d = &drv
	}
	if dc, ok := (*d).(driver.DriverContext); ok {
		return dc.OpenConnector(dsn)
	}
	return dsnConnector{dsn: dsn, driver: *d}, nil
}

func (a *adapter[K]) errorf(key K, op, dsn string, err error) *Error {
	return newError(a.keyString(key), op, dsn, err)
}
