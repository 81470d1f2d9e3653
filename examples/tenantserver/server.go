package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

	// Logger receives the server's and the cache's logs.
	//
	// default: nil, no logs.
	Logger *slog.Logger
}

// Server serves the notes of many tenants, each from its own database,
// through one rescache cache of *sql.DB pools. Create it with [NewServer];
// call [Server.Close] to close every pool.
type Server struct {
	mux     *http.ServeMux
	tenants *rescache.Cache[string, *sql.DB]
	admin   *sql.DB // PostgreSQL only: creates tenant databases
	dialect dialect
	log     *slog.Logger
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
	s := &Server{mux: http.NewServeMux(), log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	opts := sqladapter.Options[string]{
		Init: func(ctx context.Context, _ string, db *sql.DB) error {
			_, err := db.ExecContext(ctx, s.dialect.schema)
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
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("tenantserver: %w", err)
		}
		s.dialect = sqliteDialect
		opts.Driver = "sqlite"
		opts.DSN = func(_ context.Context, tenant string) (string, error) {
			return "file:" + filepath.Join(cfg.DataDir, tenant+".db") +
				"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", nil
		}
	}
	tenants, err := sqladapter.New(opts)
	if err != nil {
		if s.admin != nil {
			s.admin.Close()
		}
		return nil, err
	}
	s.tenants = tenants

	// Prometheus metrics of the cache and of every open tenant pool, on a
	// registry of the server's own (so two servers in one process do not
	// collide).
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		promcollector.New("tenants", tenants),
		promcollector.NewSQLPools("tenants", tenants, nil),
	)

	s.mux.HandleFunc("GET /t/{tenant}/notes", s.listNotes)
	s.mux.HandleFunc("POST /t/{tenant}/notes", s.addNote)
	s.mux.HandleFunc("GET /stats", s.stats)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s, nil
}

// createDatabase creates the PostgreSQL database name unless it exists.
func (s *Server) createDatabase(ctx context.Context, name string) error {
	// name is DBPrefix plus a tenant that matched validTenant.
	_, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	return err
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Handle adds a route to the server, for example a metrics endpoint.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Tenants returns the cache of tenant pools, for metrics.
func (s *Server) Tenants() *rescache.Cache[string, *sql.DB] { return s.tenants }

// Close closes every tenant pool, waiting until each is closed or ctx
// ends. Call it after the HTTP server has stopped taking requests.
func (s *Server) Close(ctx context.Context) error {
	err := s.tenants.Shutdown(ctx)
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
// writes the error and returns ok false. The caller calls release when its
// queries are done: the pool is not closed under it even if the tenant is
// evicted meanwhile.
func (s *Server) tenantDB(w http.ResponseWriter, r *http.Request) (tenant string, db *sql.DB, release func(), ok bool) {
	tenant = r.PathValue("tenant")
	if !validTenant.MatchString(tenant) {
		http.Error(w, "tenant names are 1 to 32 of a-z, 0-9 and _", http.StatusBadRequest)
		return "", nil, nil, false
	}
	db, release, err := s.tenants.Acquire(r.Context(), tenant)
	if err != nil {
		s.log.Warn("tenant unavailable", "tenant", tenant, "err", err)
		http.Error(w, "tenant unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return "", nil, nil, false
	}
	return tenant, db, release, true
}

func (s *Server) listNotes(w http.ResponseWriter, r *http.Request) {
	_, db, release, ok := s.tenantDB(w, r)
	if !ok {
		return
	}
	defer release()
	rows, err := db.QueryContext(r.Context(), s.dialect.list)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer rows.Close()
	notes := []note{}
	for rows.Next() {
		var n note
		if err := rows.Scan(&n.ID, &n.Body, &n.Created); err != nil {
			s.fail(w, err)
			return
		}
		notes = append(notes, n)
	}
	if err := rows.Err(); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, notes)
}

func (s *Server) addNote(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Body string `json:"body"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil || in.Body == "" {
		http.Error(w, `want a JSON object {"body": "..."} with a non-empty body`, http.StatusBadRequest)
		return
	}
	_, db, release, ok := s.tenantDB(w, r)
	if !ok {
		return
	}
	defer release()
	n := note{Body: in.Body}
	if err := db.QueryRowContext(r.Context(), s.dialect.insert, in.Body).Scan(&n.ID, &n.Created); err != nil {
		s.fail(w, err)
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
	st := s.tenants.Stats()
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
	for tenant, p := range sqladapter.PoolStats(s.tenants) {
		out.Pools[tenant] = poolJSON{MaxOpen: p.MaxOpenConnections, Open: p.OpenConnections, InUse: p.InUse, Idle: p.Idle, Waits: p.WaitCount}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	s.log.Error("query failed", "err", err)
	http.Error(w, "query failed", http.StatusInternalServerError)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
