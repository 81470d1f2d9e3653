package sqladapter_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// TestBuildPanicClosesPoolAndRedacts: a panic in any step of a build
// closes the pool (no database/sql goroutine outlives the cache, no
// connection or budget place is left), and the caller gets an
// *sqladapter.Error naming the step, wrapping the *rescache.PanicError,
// whose text and panic value hold no password, in every DSN form.
func TestBuildPanicClosesPoolAndRedacts(t *testing.T) {
	ctx := context.Background()
	// The forms of RedactDSN, each followed by the fake driver's pairs.
	forms := []struct {
		name, dsn string
		secrets   []string
	}{
		{"url userinfo", "postgres://app:Url5ecretPw@db:5432/acme", []string{"Url5ecretPw"}},
		{"url escaped", "postgres://app:Url5%40ecret@db/acme", []string{"Url5%40ecret", "Url5@ecret"}},
		{"url parameter", "postgres://app@db/acme?sslmode=disable&password=Url5ecretPw", []string{"Url5ecretPw"}},
		{"key=value", "host=db user=app password=Url5ecretPw dbname=acme", []string{"Url5ecretPw"}},
		{"key=value quoted", "host=db user=app password='Url5 ecret' dbname=acme", []string{"Url5 ecret"}},
		{"mysql", "app:Url5ecretPw@tcp(db:3306)/acme", []string{"Url5ecretPw"}},
		{"odbc", "Server=db;User Id=sa;Password=Url5ecretPw;", []string{"Url5ecretPw"}},
	}
	for _, budget := range []int{0, 4} {
		for _, step := range []string{"open", "connect"} {
			for _, f := range forms {
				t.Run(fmt.Sprintf("budget=%d/%s/%s", budget, step, f.name), func(t *testing.T) {
					leaks := goleak.IgnoreCurrent()
					srv := newFakeServer(t.Name())
					dsn := f.dsn + " " + fakeDSN(srv.name, "panic="+step)
					c, err := sqladapter.New(sqladapter.Options[string]{
						Driver:        fakeDriverName,
						DSN:           func(context.Context, string) (string, error) { return dsn, nil },
						MaxTotalConns: budget,
					})
					if err != nil {
						t.Fatal(err)
					}
					for range 10 {
						_, err := c.Get(ctx, "acme")
						op := map[string]string{"open": "open", "connect": "ping"}[step]
						checkPanicError(t, err, "acme", op, f.secrets)
						if step == "connect" && !errors.Is(err, errFakePanic) {
							t.Errorf("errors.Is(%v, errFakePanic) = false; want the panic value's chain", err)
						}
					}
					if b := sqladapter.PoolBudget(c); b.Held != 0 {
						t.Errorf("PoolBudget().Held = %d after failed builds; want 0", b.Held)
					}
					c.Close()
					if n := srv.open.Load(); n != 0 {
						t.Errorf("%d connections open; want 0", n)
					}
					// An unclosed *sql.DB leaves its connectionOpener running.
					if err := goleak.Find(leaks); err != nil {
						t.Errorf("a pool of a panicking build was not closed: %v", err)
					}
				})
			}
		}
	}

	// The steps that run user code.
	errBug := errors.New("bug")
	const password = "Url5ecretPw"
	var initDB *sql.DB
	steps := []struct {
		op   string
		edit func(*sqladapter.Options[string], *fakeServer)
	}{
		{"pool", func(o *sqladapter.Options[string], _ *fakeServer) {
			o.Pool = func(string) sqladapter.PoolSettings { panic(errBug) }
		}},
		{"dsn", func(o *sqladapter.Options[string], _ *fakeServer) {
			o.DSN = func(context.Context, string) (string, error) { panic(errBug) }
		}},
		{"connector", func(o *sqladapter.Options[string], _ *fakeServer) {
			o.Driver, o.DSN = "", nil
			o.Connector = func(context.Context, string) (driver.Connector, error) { panic(errBug) }
		}},
		{"init", func(o *sqladapter.Options[string], _ *fakeServer) {
			o.Init = func(_ context.Context, _ string, db *sql.DB) error {
				initDB = db
				panic(fmt.Errorf("init of postgres://app:%s@db: %w", password, errBug))
			}
		}},
	}
	for _, budget := range []int{0, 4} {
		for _, s := range steps {
			t.Run(fmt.Sprintf("budget=%d/%s", budget, s.op), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				srv := newFakeServer(t.Name())
				opts := sqladapter.Options[string]{
					Driver: fakeDriverName,
					DSN: func(context.Context, string) (string, error) {
						return "postgres://app:" + password + "@db/acme " + fakeDSN(srv.name), nil
					},
					MaxTotalConns: budget,
					Cache:         rescache.Options[string, *sql.DB]{KeyString: func(string) string { return "tenant-7" }},
				}
				s.edit(&opts, srv)
				c, err := sqladapter.New(opts)
				if err != nil {
					t.Fatal(err)
				}
				initDB = nil
				_, err = c.Get(ctx, "acme")
				checkPanicError(t, err, "tenant-7", s.op, []string{password, "acme"})
				if !errors.Is(err, errBug) {
					t.Errorf("errors.Is(%v, errBug) = false", err)
				}
				if s.op == "init" && (initDB == nil || initDB.PingContext(ctx) == nil) {
					t.Error("the pool of a build whose Init panicked is still open")
				}
				c.Close()
				if n := srv.open.Load(); n != 0 {
					t.Errorf("%d connections open; want 0", n)
				}
				if err := goleak.Find(leaks); err != nil {
					t.Errorf("a pool of a panicking build was not closed: %v", err)
				}
			})
		}
	}
}

// checkPanicError checks that err is the *sqladapter.Error of a panic in
// op, wrapping a *rescache.PanicError, and that none of secrets appears in
// its text or in the PanicError's.
func checkPanicError(t *testing.T, err error, tenant, op string, secrets []string) {
	t.Helper()
	checkTenantError(t, err, tenant, op)
	var pe *rescache.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Get() error = %v; want it to wrap a *rescache.PanicError", err)
	}
	if len(pe.Stack) == 0 {
		t.Error("PanicError.Stack is empty")
	}
	if !strings.Contains(err.Error(), "panic") {
		t.Errorf("Get() error = %q; want it to say the step panicked", err)
	}
	for _, s := range secrets {
		for what, text := range map[string]string{
			"Error()":            err.Error(),
			"PanicError.Error()": pe.Error(),
			"PanicError.Value":   fmt.Sprint(pe.Value),
			"%+v":                fmt.Sprintf("%+v", err),
		} {
			if s == "acme" && what == "PanicError.Error()" {
				continue // the PanicError names the key with fmt.Sprint
			}
			if strings.Contains(text, s) {
				t.Errorf("%s = %q; shows %q", what, text, s)
			}
		}
	}
}
