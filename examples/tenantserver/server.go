package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache/budget/redisbudget"
	"github.com/rescache/rescache/pgxadapter"
	_ "modernc.org/sqlite" // registers "sqlite"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/promcollector"
	"github.com/rescache/rescache/sqladapter"
)

// Config configures a [Server]. The zero value serves SQLite files from
// the directory rescache-tenants in the system's temporary directory.
type Config struct {
	// DataDir holds one SQLite database file per tenant, created on first
	// use. Ignored when PostgresDSN is set.
	//
	// default: $TMPDIR/rescache-tenants.
	DataDir string

	// PostgresDSN, when set, serves each tenant from its own PostgreSQL
	// database, named DBPrefix + tenant and created on first use through
	// this DSN, which must have the right to create databases.
	//
	// default: "", SQLite.
	PostgresDSN string

	// DBPrefix starts the name of every tenant database on PostgreSQL.
	//
	// default: "tenant_".
	DBPrefix string

	// MaxTenants bounds the tenant pools open at once (the cache's
	// MaxEntries); the least recently used tenant is closed beyond it.
	//
	// default: 100.
	MaxTenants int

	// IdleTimeout closes the pool of a tenant unused this long.
	//
	// default: 10m.
	IdleTimeout time.Duration

	// MaxConns is the connection budget of the tenant pools
	// (sqladapter.Options.MaxTotalConns): the most connections all of them
	// hold at once. Zero derives it from a PostgreSQL server:
	// max_connections minus superuser_reserved_connections (and
	// reserved_connections, PostgreSQL 16 and later) minus ConnHeadroom;
	// with SQLite zero means no budget. A negative value means no budget.
	//
	// default: 0, derived from PostgreSQL.
	MaxConns int

	// ConnHeadroom is what the derived budget leaves to other clients of
	// the PostgreSQL server (the server's own admin pool of 2 connections,
	// psql, migrations, monitoring).
	//
	// default: 10.
	ConnHeadroom int

	// Driver chooses how tenants' pools are made: "database/sql" (the
	// default: one *sql.DB per tenant through sqladapter, on pgx's stdlib
	// driver or SQLite) or "pgxpool" (one *pgxpool.Pool per tenant through
	// pgxadapter; PostgreSQL only).
	//
	// default: "", meaning "database/sql".
	Driver string

	// FleetRedis, when set, is the address of the Redis that coordinates
	// one connection budget for every instance of a fleet
	// (budget/redisbudget): FleetMaxConns places for all the instances'
	// tenant pools together, FleetLocalConns for this instance while Redis
	// does not answer. MaxConns and the budget derived from the server are
	// then not used.
	FleetRedis string

	// FleetMaxConns is the fleet's budget; required with FleetRedis.
	FleetMaxConns int

	// FleetLocalConns is this instance's share while it cannot reach
	// Redis: choose it so that it times the most instances you run stays
	// within FleetMaxConns.
	//
	// default: 0, meaning FleetMaxConns/4 (at least 1).
	FleetLocalConns int

	// Logger receives the server's and the cache's logs.
	//
	// default: nil, no logs.
	Logger *slog.Logger

	// sqliteDriver is the database/sql driver of the SQLite files; tests
	// set a driver that wraps modernc.org/sqlite's to break connections.
	//
	// default: "sqlite".
	sqliteDriver string
}

// Server serves the notes of many tenants, each from its own database,
// through one rescache cache of *sql.DB pools. Create it with [NewServer];
// call [Server.Close] to close every pool.
type Server struct {
	mux     *http.ServeMux
	tenants *rescache.Cache[string, *sql.DB]       // with Driver "database/sql"
	pgx     *rescache.Cache[string, *pgxpool.Pool] // with Driver "pgxpool"
	admin   *sql.DB                                // PostgreSQL only: creates tenant databases
	dialect dialect
	log     *slog.Logger
	budget  Budget
	fleet   *redisbudget.Budget // with Config.FleetRedis
	fleetDB *redis.Client       // the fleet budget's Redis client
}

// Budget is the connection budget of a [Server] and where it comes from.
type Budget struct {
	// MaxConns is the budget; 0 means none.
	MaxConns int
	// Derived tells whether MaxConns was derived from the server, from the
	// figures below.
	Derived bool
	// MaxConnections, Reserved and Headroom are the server's
	// max_connections, its reserved connections (superuser and, from
	// PostgreSQL 16, reserved_connections) and Config.ConnHeadroom.
	MaxConnections, Reserved, Headroom int
	// Fleet tells whether MaxConns is a fleet budget shared through Redis
	// (Config.FleetRedis); LocalConns is then this instance's share while
	// Redis does not answer.
	Fleet      bool
	LocalConns int
}

// dialect holds the SQL that differs between SQLite and PostgreSQL.
type dialect struct {
	schema, insert, list string
}

var (
	sqliteDialect = dialect{
		schema: `CREATE TABLE IF NOT EXISTS notes (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			body TEXT NOT NULL,
			created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))`,
		insert: "INSERT INTO notes (body) VALUES (?) RETURNING id, created",
		list:   "SELECT id, body, created FROM notes ORDER BY id",
	}
	postgresDialect = dialect{
		schema: `CREATE TABLE IF NOT EXISTS notes (
			id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			body TEXT NOT NULL,
			created TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`,
		insert: "INSERT INTO notes (body) VALUES ($1) RETURNING id, created",
		list:   "SELECT id, body, created FROM notes ORDER BY id",
	}
)

// validTenant is the form of a tenant name. Tenant names come from request
// paths and become file or database names, so they are checked first.
var validTenant = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)

// NewServer returns a server for cfg. It opens no tenant database: each is
// opened on its tenant's first request.
func NewServer(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = defaultDataDir()
	}
	if cfg.DBPrefix == "" {
		cfg.DBPrefix = "tenant_"
	}
	if cfg.MaxTenants == 0 {
		cfg.MaxTenants = 100
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.ConnHeadroom == 0 {
		cfg.ConnHeadroom = 10
	}
	switch cfg.Driver {
	case "", "database/sql":
	case "pgxpool":
		if cfg.PostgresDSN == "" {
			return nil, errors.New("tenantserver: -driver pgxpool needs -postgres")
		}
	default:
		return nil, fmt.Errorf("tenantserver: unknown -driver %q; want database/sql or pgxpool", cfg.Driver)
	}
	s := &Server{mux: http.NewServeMux(), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	opts := sqladapter.Options[string]{
		Init: func(ctx context.Context, _ string, db *sql.DB) error {
			_, err := db.ExecContext(ctx, s.dialect.schema)
			if isUniqueViolation(err) {
				// Another instance of a fleet created the table at the same
				// moment (CREATE TABLE IF NOT EXISTS races on the catalog):
				// it exists now.
				err = nil
			}
			return err
		},
		HealthCheck: true,
		Cache: rescache.Options[string, *sql.DB]{
			MaxEntries:          cfg.MaxTenants,
			IdleTimeout:         cfg.IdleTimeout,
			BuildTimeout:        10 * time.Second,
			MaxConcurrentBuilds: 8,
			ErrorTTL:            time.Second,
			Logger:              cfg.Logger,
		},
	}
	if cfg.PostgresDSN != "" {
		base, err := url.Parse(cfg.PostgresDSN)
		if err != nil || base.Scheme == "" {
			return nil, fmt.Errorf("tenantserver: the PostgreSQL DSN must be a postgres:// URL: %s", sqladapter.RedactDSN(cfg.PostgresDSN))
		}
		admin, err := sql.Open("pgx", cfg.PostgresDSN)
		if err != nil {
			return nil, fmt.Errorf("tenantserver: %s: %v", sqladapter.RedactDSN(cfg.PostgresDSN), err)
		}
		admin.SetMaxOpenConns(2)
		s.admin = admin
		switch {
		case cfg.FleetRedis != "":
			// The fleet budget below takes the place of a per-process one.
		case cfg.MaxConns > 0:
			s.budget = Budget{MaxConns: cfg.MaxConns}
		case cfg.MaxConns == 0:
			b, err := deriveBudget(admin, cfg.ConnHeadroom)
			if err != nil {
				admin.Close()
				return nil, fmt.Errorf("tenantserver: deriving the connection budget from %s (set -max-conns to skip): %w", sqladapter.RedactDSN(cfg.PostgresDSN), err)
			}
			s.budget = b
		}
		s.dialect = postgresDialect
		opts.Driver = "pgx"
		opts.DSN = func(ctx context.Context, tenant string) (string, error) {
			name := cfg.DBPrefix + tenant
			if err := s.createDatabase(ctx, name); err != nil {
				return "", err
			}
			u := *base
			u.Path = "/" + name
			return u.String(), nil
		}
	} else {
		if cfg.MaxConns > 0 && cfg.FleetRedis == "" {
			s.budget = Budget{MaxConns: cfg.MaxConns}
		}
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("tenantserver: %w", err)
		}
		s.dialect = sqliteDialect
		opts.Driver = cfg.sqliteDriver
		if opts.Driver == "" {
			opts.Driver = "sqlite"
		}
		opts.DSN = func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(cfg.DataDir, tenant+".db") +
				"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", nil
		}
	}
	if cfg.FleetRedis != "" {
		if cfg.FleetMaxConns < 1 {
			if s.admin != nil {
				s.admin.Close()
			}
			return nil, fmt.Errorf("tenantserver: -fleet-redis needs -fleet-max-conns, the fleet's budget (at least 1)")
		}
		s.fleetDB = redis.NewClient(&redis.Options{Addr: cfg.FleetRedis})
		// Every instance that serves the same databases shares one budget,
		// named after the database server.
		name := "tenantserver:" + cfg.DataDir
		if cfg.PostgresDSN != "" {
			u, _ := url.Parse(cfg.PostgresDSN)
			name = "tenantserver:" + u.Host
		}
		fb, err := redisbudget.New(redisbudget.Options{
			Client: s.fleetDB, Name: name, Max: cfg.FleetMaxConns, LocalMax: cfg.FleetLocalConns, Logger: cfg.Logger,
		})
		if err != nil {
			s.fleetDB.Close()
			if s.admin != nil {
				s.admin.Close()
			}
			return nil, fmt.Errorf("tenantserver: %w", err)
		}
		s.fleet = fb
		s.budget = Budget{MaxConns: cfg.FleetMaxConns, Fleet: true, LocalConns: fb.LocalMax()}
		opts.Budget = fb
	} else {
		opts.MaxTotalConns = s.budget.MaxConns
	}
	if cfg.Driver == "pgxpool" {
		if err := s.newPgxTenants(cfg, opts); err != nil {
			if s.fleet != nil {
				s.fleet.Close()
				s.fleetDB.Close()
			}
			s.admin.Close()
			return nil, err
		}
		s.routes(promcollector.New("tenants", s.pgx),
			promcollector.NewSQLPoolsFunc("tenants", func() map[string]sql.DBStats { return pgxadapter.DBStats(s.pgx) }, nil))
		return s, nil
	}
	tenants, err := sqladapter.New(opts)
	if err != nil {
		if s.fleet != nil {
			s.fleet.Close()
			s.fleetDB.Close()
		}
		if s.admin != nil {
			s.admin.Close()
		}
		return nil, err
	}
	s.tenants = tenants

	// Prometheus metrics of the cache and of every open tenant pool, on a
	// registry of the server's own (so two servers in one process do not
	// collide).
	s.routes(promcollector.New("tenants", tenants),
		promcollector.NewSQLPools("tenants", tenants, nil),
		promcollector.NewSQLBudget("tenants", tenants))
	return s, nil
}

// routes registers the handlers, and the collectors on a registry of the
// server's own (so two servers in one process do not collide).
func (s *Server) routes(collectors ...prometheus.Collector) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors...)
	s.mux.HandleFunc("GET /t/{tenant}/notes", s.listNotes)
	s.mux.HandleFunc("POST /t/{tenant}/notes", s.addNote)
	s.mux.HandleFunc("GET /stats", s.stats)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

// newPgxTenants makes the cache of one pgxpool.Pool per tenant
// (Driver "pgxpool"), with the cache options, budget and database
// creation of opts: the tenant's database is created in Config, its schema
// by the pool's first connection (during the build's ping, so before the
// pool is cached, and counted in the budget like any connection).
func (s *Server) newPgxTenants(cfg Config, opts sqladapter.Options[string]) error {
	base, err := url.Parse(cfg.PostgresDSN)
	if err != nil {
		return fmt.Errorf("tenantserver: %s: %v", sqladapter.RedactDSN(cfg.PostgresDSN), err)
	}
	co := rescache.Options[string, *pgxpool.Pool]{
		MaxEntries: opts.Cache.MaxEntries, IdleTimeout: opts.Cache.IdleTimeout,
		HealthCheckInterval: opts.Cache.HealthCheckInterval, Logger: opts.Cache.Logger,
	}
	c, err := pgxadapter.New(pgxadapter.Options[string]{
		Config: func(ctx context.Context, tenant string) (*pgxpool.Config, error) {
			name := cfg.DBPrefix + tenant
			if err := s.createDatabase(ctx, name); err != nil {
				return nil, err
			}
			u := *base
			u.Path = "/" + name
			pc, err := pgxpool.ParseConfig(u.String())
			if err != nil {
				return nil, err
			}
			pc.MaxConns = 10
			var once sync.Once
			var schemaErr error
			pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
				once.Do(func() {
					if _, err := conn.Exec(ctx, s.dialect.schema); err != nil && !isUniqueViolation(err) {
						schemaErr = err
					}
				})
				return schemaErr
			}
			return pc, nil
		},
		HealthCheck:   true,
		MaxTotalConns: opts.MaxTotalConns,
		Budget:        opts.Budget,
		Cache:         co,
	})
	if err != nil {
		return err
	}
	s.pgx = c
	return nil
}

// deriveBudget returns the budget that leaves headroom connections of the
// PostgreSQL server of admin to other clients.
func deriveBudget(admin *sql.DB, headroom int) (Budget, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := Budget{Derived: true, Headroom: headroom}
	// reserved_connections exists from PostgreSQL 16; missing_ok makes it
	// NULL before.
	err := admin.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int
		+ coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)`).Scan(&b.MaxConnections, &b.Reserved)
	if err != nil {
		return Budget{}, err
	}
	b.MaxConns = b.MaxConnections - b.Reserved - headroom
	if b.MaxConns < 1 {
		return Budget{}, fmt.Errorf("max_connections %d - reserved %d - headroom %d leaves no connection", b.MaxConnections, b.Reserved, headroom)
	}
	return b, nil
}

// Budget returns the server's connection budget.
func (s *Server) Budget() Budget { return s.budget }

// FleetInstance returns this instance's id in the fleet budget's Redis, or
// "" without Config.FleetRedis.
func (s *Server) FleetInstance() string {
	if s.fleet == nil {
		return ""
	}
	return s.fleet.Instance()
}

// createDatabase creates the PostgreSQL database name unless it exists.
func (s *Server) createDatabase(ctx context.Context, name string) error {
	// name is DBPrefix plus a tenant that matched validTenant.
	_, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if isUniqueViolation(err) {
		// Another instance of a fleet created it at the same moment: the
		// catalog's unique index caught the race, and the database exists.
		return nil
	}
	return err
}

// isUniqueViolation reports whether err is one of the errors that
// concurrent CREATE DATABASE and CREATE TABLE IF NOT EXISTS of the same name
// raise when they race (instances of a fleet creating a new tenant at the
// same moment): unique_violation on the system catalogs, duplicate_table,
// duplicate_object. The object exists then.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505", "42P07", "42710":
		return true
	}
	return false
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Handle adds a route to the server, for example a metrics endpoint.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Tenants returns the cache of tenant pools with Driver "database/sql",
// for metrics; nil with "pgxpool" (see [Server.PgxTenants]).
func (s *Server) Tenants() *rescache.Cache[string, *sql.DB] { return s.tenants }

// PgxTenants returns the cache of tenant pools with Driver "pgxpool"; nil
// otherwise.
func (s *Server) PgxTenants() *rescache.Cache[string, *pgxpool.Pool] { return s.pgx }

// CacheStats returns the figures of the tenants' cache, whichever Driver.
func (s *Server) CacheStats() rescache.Stats {
	if s.pgx != nil {
		return s.pgx.Stats()
	}
	return s.tenants.Stats()
}

// Close closes every tenant pool, waiting until each is closed or ctx
// ends. Call it after the HTTP server has stopped taking requests.
func (s *Server) Close(ctx context.Context) error {
	var err error
	if s.pgx != nil {
		err = s.pgx.Shutdown(ctx)
	} else {
		err = s.tenants.Shutdown(ctx)
	}
	if s.fleet != nil {
		// After the pools: their places go back to the fleet at once.
		err = errors.Join(err, s.fleet.Close(), s.fleetDB.Close())
	}
	if s.admin != nil {
		err = errors.Join(err, s.admin.Close())
	}
	return err
}

// note is one note, as the API shows it.
type note struct {
	ID      int64  `json:"id"`
	Body    string `json:"body"`
	Created string `json:"created"`
}

// tenantDB answers the tenant of r's path and a lease on its pool, or
// writes the error and returns ok false. The caller defers l.Release: the
// pool is not closed under its queries even if the tenant is evicted
// meanwhile. A query that fails with a connection error goes to
// [Server.fail], which discards the pool instead.
func (s *Server) tenantDB(w http.ResponseWriter, r *http.Request) (l tenantLease, ok bool) {
	tenant := r.PathValue("tenant")
	if !validTenant.MatchString(tenant) {
		http.Error(w, "tenant names are 1 to 32 of a-z, 0-9 and _", http.StatusBadRequest)
		return l, false
	}
	var err error
	if s.pgx != nil {
		var pl rescache.Lease[string, *pgxpool.Pool]
		pl, err = s.pgx.Lease(r.Context(), tenant)
		l = tenantLease{key: tenant, notes: pgxNotes{pl.Value(), s.dialect}, release: pl.Release, discard: pl.Discard}
	} else {
		var sl rescache.Lease[string, *sql.DB]
		sl, err = s.tenants.Lease(r.Context(), tenant)
		l = tenantLease{key: tenant, notes: sqlNotes{sl.Value(), s.dialect}, release: sl.Release, discard: sl.Discard}
	}
	if err != nil {
		s.unavailable(w, r, "tenant unavailable", tenant, err)
		return tenantLease{}, false
	}
	return l, true
}

// tenantLease is a lease on a tenant's pool, whichever Driver: its
// queries, and the lease's Release and Discard.
type tenantLease struct {
	key              string
	notes            notesDB
	release, discard func()
}

// notesDB runs the notes queries on one tenant's pool.
type notesDB interface {
	list(ctx context.Context) ([]note, error)
	add(ctx context.Context, body string) (note, error)
}

// sqlNotes runs them on a *sql.DB.
type sqlNotes struct {
	db *sql.DB
	d  dialect
}

func (n sqlNotes) list(ctx context.Context) ([]note, error) { return queryNotes(ctx, n.db, n.d.list) }

func (n sqlNotes) add(ctx context.Context, body string) (note, error) {
	out := note{Body: body}
	err := n.db.QueryRowContext(ctx, n.d.insert, body).Scan(&out.ID, &out.Created)
	return out, err
}

// pgxNotes runs them on a *pgxpool.Pool.
type pgxNotes struct {
	pool *pgxpool.Pool
	d    dialect
}

func (n pgxNotes) list(ctx context.Context) ([]note, error) {
	rows, err := n.pool.Query(ctx, n.d.list)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	notes := []note{}
	for rows.Next() {
		var x note
		if err := rows.Scan(&x.ID, &x.Body, &x.Created); err != nil {
			return nil, err
		}
		notes = append(notes, x)
	}
	return notes, rows.Err()
}

func (n pgxNotes) add(ctx context.Context, body string) (note, error) {
	out := note{Body: body}
	err := n.pool.QueryRow(ctx, n.d.insert, body).Scan(&out.ID, &out.Created)
	return out, err
}

// unavailable answers 503. The error may name the database user, host,
// database and the driver's message: it goes to the log under a request
// id, and the client gets only that id.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, msg, tenant string, err error) {
	id := requestID()
	s.log.Warn(msg, "request_id", id, "tenant", tenant, "method", r.Method, "path", r.URL.Path, "err", err)
	w.Header().Set("Retry-After", "1")
	http.Error(w, msg+"; try again later (request id "+id+")", http.StatusServiceUnavailable)
}

// requestID returns a random id that ties an answer to its log line.
func requestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) listNotes(w http.ResponseWriter, r *http.Request) {
	l, ok := s.tenantDB(w, r)
	if !ok {
		return
	}
	defer l.release() // a no-op after fail's Discard
	notes, err := l.notes.list(r.Context())
	if err != nil {
		s.fail(w, r, l, err)
		return
	}
	writeJSON(w, http.StatusOK, notes)
}

// queryNotes runs the list query on db and reads every note. Its rows are
// closed when it returns, before the caller may discard db.
func queryNotes(ctx context.Context, db *sql.DB, query string) ([]note, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	notes := []note{}
	for rows.Next() {
		var n note
		if err := rows.Scan(&n.ID, &n.Body, &n.Created); err != nil {
			return nil, err
		}
		notes = append(notes, n)
	}
	return notes, rows.Err()
}

// maxNoteRequest bounds the body of a POST.
const maxNoteRequest = 64 << 10

func (s *Server) addNote(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "want Content-Type: application/json", http.StatusUnsupportedMediaType)
		return
	}
	var in struct {
		Body string `json:"body"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxNoteRequest))
	dec.DisallowUnknownFields()
	err := dec.Decode(&in)
	if err == nil {
		// One JSON value and nothing after it.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, fmt.Sprintf("request body over %d bytes", tooBig.Limit), http.StatusRequestEntityTooLarge)
		return
	case err != nil || in.Body == "":
		http.Error(w, `want one JSON object {"body": "..."} with a non-empty body and no other field`, http.StatusBadRequest)
		return
	}
	l, ok := s.tenantDB(w, r)
	if !ok {
		return
	}
	defer l.release() // a no-op after fail's Discard
	n, err := l.notes.add(r.Context(), in.Body)
	if err != nil {
		s.fail(w, r, l, err)
		return
	}
	writeJSON(w, http.StatusCreated, n)
}

// statsJSON is the body of GET /stats: the cache's counters and the pool
// of each open tenant.
type statsJSON struct {
	Hits              uint64              `json:"hits"`
	Misses            uint64              `json:"misses"`
	ErrorHits         uint64              `json:"error_hits"`
	Builds            uint64              `json:"builds"`
	BuildErrors       uint64              `json:"build_errors"`
	BuildSecondsTotal float64             `json:"build_seconds_total"`
	Evictions         uint64              `json:"evictions"`
	EvictionsByReason map[string]uint64   `json:"evictions_by_reason"`
	Closes            uint64              `json:"closes"`
	CloseErrors       uint64              `json:"close_errors"`
	HealthChecks      uint64              `json:"health_checks"`
	HealthCheckErrors uint64              `json:"health_check_errors"`
	Entries           int                 `json:"entries"`
	Pending           int                 `json:"pending"`
	Leased            int                 `json:"leased"`
	Pools             map[string]poolJSON `json:"pools"`
	Budget            budgetJSON          `json:"budget"`
}

// budgetJSON is the connection budget of all pools.
type budgetJSON struct {
	MaxConns         int     `json:"max_conns"`
	Held             int     `json:"held"`
	Waiting          int     `json:"waiting"`
	Waits            int64   `json:"waits"`
	WaitSecondsTotal float64 `json:"wait_seconds_total"`
	Reclaimed        int64   `json:"reclaimed"`
	HandedOver       int64   `json:"handed_over"`
}

// poolJSON is the state of one tenant's pool.
type poolJSON struct {
	MaxOpen int   `json:"max_open"`
	Open    int   `json:"open"`
	InUse   int   `json:"in_use"`
	Idle    int   `json:"idle"`
	Waits   int64 `json:"waits"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st := s.CacheStats()
	out := statsJSON{
		Hits: st.Hits, Misses: st.Misses, ErrorHits: st.ErrorHits,
		Builds: st.Builds, BuildErrors: st.BuildErrors, BuildSecondsTotal: st.BuildTime.Seconds(),
		Evictions: st.Evictions, EvictionsByReason: map[string]uint64{},
		Closes: st.Closes, CloseErrors: st.CloseErrors,
		HealthChecks: st.HealthChecks, HealthCheckErrors: st.HealthCheckErrors,
		Entries: st.Entries, Pending: st.Pending, Leased: st.Leased,
		Pools: map[string]poolJSON{},
	}
	for reason, n := range st.EvictionsByReason {
		out.EvictionsByReason[reason.String()] = n
	}
	if s.pgx != nil {
		for tenant, p := range pgxadapter.DBStats(s.pgx) {
			out.Pools[tenant] = poolJSON{MaxOpen: p.MaxOpenConnections, Open: p.OpenConnections, InUse: p.InUse, Idle: p.Idle, Waits: p.WaitCount}
		}
		b := pgxadapter.PoolBudget(s.pgx)
		out.Budget = budgetJSON{MaxConns: b.Max, Held: b.Held, Waiting: b.Waiting, Waits: b.WaitCount, WaitSecondsTotal: b.WaitDuration.Seconds()}
		writeJSON(w, http.StatusOK, out)
		return
	}
	for tenant, p := range sqladapter.PoolStats(s.tenants) {
		out.Pools[tenant] = poolJSON{MaxOpen: p.MaxOpenConnections, Open: p.OpenConnections, InUse: p.InUse, Idle: p.Idle, Waits: p.WaitCount}
	}
	b := sqladapter.PoolBudget(s.tenants)
	out.Budget = budgetJSON{
		MaxConns: b.MaxTotalConns, Held: b.Held, Waiting: b.Waiting,
		Waits: b.WaitCount, WaitSecondsTotal: b.WaitDuration.Seconds(),
		Reclaimed: b.Reclaimed, HandedOver: b.HandedOver,
	}
	writeJSON(w, http.StatusOK, out)
}

// fail answers a failed query on the pool of lease l: 503 when no
// connection of the budget came free in time; 503 too when the query
// failed with a connection error (see [isConnectionError]), after l.Discard
// has removed the pool from the cache, so that the client's retry runs on a
// fresh pool (other requests on the old pool finish first: it closes at its
// last release); 500 otherwise. The answer holds a request id and no detail
// of the error, which goes to the log.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, l tenantLease, err error) {
	switch {
	case errors.Is(err, sqladapter.ErrBudgetWait):
		s.unavailable(w, r, "database busy", l.key, err)
		return
	case isConnectionError(err):
		l.discard()
		s.unavailable(w, r, "database connection lost", l.key, err)
		return
	}
	id := requestID()
	s.log.Error("query failed", "request_id", id, "tenant", l.key, "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, "query failed (request id "+id+")", http.StatusInternalServerError)
}

// isConnectionError tells whether err, from a query, says that the
// connection to the database failed, rather than the query (a syntax
// error, a constraint, a missing row) or the request (its context ended):
//
//   - driver.ErrBadConn: database/sql's "bad connection", returned when the
//     driver saw a dead connection and database/sql's own retries found
//     no good one either;
//   - a net.Error (a reset, a refused dial, a read or write timeout), io.EOF
//     and io.ErrUnexpectedEOF (the server hung up mid-reply);
//   - pgx's connection errors: *pgconn.ConnectError (a new connection of
//     the pool could not be made), pgconn.ErrConnClosed, and any error
//     pgconn.SafeToRetry reports, which failed before anything reached the
//     server;
//   - a PostgreSQL error of SQLSTATE class 08 (connection exception) or
//     57P01 (admin_shutdown: the server or an administrator ended the
//     session).
//
// context.Canceled and context.DeadlineExceeded are never connection
// errors, however the driver wraps them (a deadline is also a net.Error,
// and pgconn reports a done context as SafeToRetry): the client went away
// or was slow, and the pool is fine.
func isConnectionError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var (
		netErr     net.Error
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
	)
	switch {
	case errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.As(err, &netErr),
		errors.Is(err, pgconn.ErrConnClosed), errors.As(err, &connectErr), pgconn.SafeToRetry(err):
		return true
	case errors.As(err, &pgErr):
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01"
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
