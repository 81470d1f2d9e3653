// Command tenantserver is a multi-tenant notes service: every tenant's
// notes live in the tenant's own database, reached through one *sql.DB pool
// per tenant that rescache opens on first use, bounds and closes.
//
//	go run ./examples/tenantserver                  # SQLite files under $TMPDIR/rescache-tenants
//	go run ./examples/tenantserver -postgres 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
//	curl -H 'Content-Type: application/json' -d '{"body":"hello"}' localhost:8080/t/acme/notes
//	curl localhost:8080/t/acme/notes
//	curl localhost:8080/stats
//
// SIGINT or SIGTERM stops it gracefully: requests in flight finish, then
// every tenant pool is closed. go run does not pass SIGTERM on to the
// program it runs: stop it with Ctrl-C, or build it first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rescache/rescache/sqladapter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tenantserver:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx ends, then shuts down: it stops taking
// requests, lets those in flight finish (for up to 10s), and closes every
// tenant pool. It calls listening, if not nil, with the address it serves
// on once it accepts connections.
func run(ctx context.Context, args []string, logw io.Writer, listening func(addr string)) error {
	fs := flag.NewFlagSet("tenantserver", flag.ContinueOnError)
	fs.SetOutput(logw)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	var cfg Config
	fs.StringVar(&cfg.DataDir, "data", defaultDataDir(), "directory of the tenants' SQLite files")
	fs.StringVar(&cfg.PostgresDSN, "postgres", "", "serve tenants from PostgreSQL: a postgres:// DSN with the right to create databases")
	fs.StringVar(&cfg.DBPrefix, "db-prefix", "tenant_", "PostgreSQL: prefix of the tenant database names")
	fs.StringVar(&cfg.Driver, "driver", "database/sql", "tenant pools: database/sql (sqladapter) or pgxpool (pgxadapter; PostgreSQL only)")
	fs.IntVar(&cfg.MaxTenants, "max-tenants", 100, "tenant pools open at once")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 10*time.Minute, "close the pool of a tenant unused this long")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "connection budget of all tenant pools; 0: PostgreSQL's max_connections - reserved - headroom (none with SQLite); -1: none")
	fs.IntVar(&cfg.ConnHeadroom, "conn-headroom", 10, "PostgreSQL connections the derived budget leaves to other clients")
	fs.StringVar(&cfg.FleetRedis, "fleet-redis", "", "Redis address that coordinates one connection budget for every instance (replaces -max-conns)")
	fs.IntVar(&cfg.FleetMaxConns, "fleet-max-conns", 0, "with -fleet-redis: the fleet's connection budget, for all instances together")
	fs.IntVar(&cfg.FleetLocalConns, "fleet-local-conns", 0, "with -fleet-redis: this instance's share while Redis does not answer; 0: fleet-max-conns/4")
	debug := fs.Bool("debug", false, "log the cache's lifecycle events")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log

	srv, err := NewServer(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		srv.Close(context.Background())
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	switch b := srv.Budget(); {
	case b.Fleet:
		log.Info("connection budget", "fleet_redis", cfg.FleetRedis, "fleet_max_conns", b.MaxConns, "fleet_local_conns", b.LocalConns, "fleet_instance", srv.FleetInstance())
	case b.Derived:
		log.Info("connection budget", "max_conns", b.MaxConns, "from", fmt.Sprintf("max_connections %d - reserved %d - headroom %d", b.MaxConnections, b.Reserved, b.Headroom))
	case b.MaxConns > 0:
		log.Info("connection budget", "max_conns", b.MaxConns, "from", "-max-conns")
	default:
		log.Info("connection budget", "max_conns", "none")
	}
	if cfg.PostgresDSN != "" {
		log.Info("serving", "addr", ln.Addr().String(), "postgres", sqladapter.RedactDSN(cfg.PostgresDSN), "db_prefix", cfg.DBPrefix)
	} else {
		log.Info("serving", "addr", ln.Addr().String(), "sqlite_dir", cfg.DataDir)
	}
	if listening != nil {
		listening(ln.Addr().String())
	}

	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = hs.Shutdown(sctx)
		<-served
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cerr := srv.Close(cctx); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing tenant pools: %w", cerr))
	}
	log.Info("stopped", "tenants_closed", srv.CacheStats().Closes)
	return err
}

// defaultDataDir is where the tenants' SQLite files go without -data.
func defaultDataDir() string { return filepath.Join(os.TempDir(), "rescache-tenants") }
