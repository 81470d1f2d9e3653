package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
	"go.uber.org/goleak"
)

func TestNewRejectsInvalidOptions(t *testing.T) {
	valid := func(context.Context, int) (*redis.Options, error) { return &redis.Options{}, nil }
	validU := func(context.Context, int) (*redis.UniversalOptions, error) { return &redis.UniversalOptions{}, nil }
	tests := []struct {
		name string
		new  func() error
		want string
	}{
		{"nil Client", func() error {
			_, err := redisadapter.New(redisadapter.Options[int]{})
			return err
		}, "redisadapter: Options.Client is nil"},
		{"negative PingTimeout", func() error {
			_, err := redisadapter.New(redisadapter.Options[int]{Client: valid, PingTimeout: -time.Second})
			return err
		}, "redisadapter: PingTimeout is negative (-1s)"},
		{"invalid cache options", func() error {
			_, err := redisadapter.New(redisadapter.Options[int]{Client: valid, Cache: rescache.Options[int, *redis.Client]{MaxEntries: -1}})
			return err
		}, "MaxEntries"},
		{"health-check interval without HealthCheck", func() error {
			_, err := redisadapter.New(redisadapter.Options[int]{Client: valid, Cache: rescache.Options[int, *redis.Client]{HealthCheckInterval: time.Second}})
			return err
		}, "redisadapter: Cache.HealthCheckInterval or Cache.HealthCheckTimeout is set but health checks are off; set HealthCheck"},
		{"universal health-check timeout without HealthCheck", func() error {
			_, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{Client: validU, Cache: rescache.Options[int, redis.UniversalClient]{HealthCheckTimeout: time.Second}})
			return err
		}, "set HealthCheck to PING idle clients"},
		{"universal nil Client", func() error {
			_, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{})
			return err
		}, "redisadapter: UniversalOptions.Client is nil"},
		{"universal negative PingTimeout", func() error {
			_, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{Client: validU, PingTimeout: -1})
			return err
		}, "redisadapter: PingTimeout is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.new()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v; want one containing %q", err, tt.want)
			}
		})
	}
}

// A failed build returns a BuildError that names the tenant and the cause,
// redacts passwords, caches nothing and leaves no client running.
func TestBuildErrors(t *testing.T) {
	const secret = "s3cr3t-pw"
	f := newFleet(t, 16, false)
	errUnknown := errors.New("no such tenant")
	refused := closedAddr(t)
	tests := []struct {
		name    string
		options func() (*redis.Options, error)
		is      error  // errors.Is(err, is), when set
		want    string // a substring of the message
		addr    string // BuildError.Addr
	}{
		{
			name:    "options function fails",
			options: func() (*redis.Options, error) { return nil, errUnknown },
			is:      errUnknown,
			want:    `redisadapter: tenant "7": no such tenant`,
		},
		{
			name:    "nil options",
			options: func() (*redis.Options, error) { return nil, nil },
			is:      redisadapter.ErrNilOptions,
			want:    `redisadapter: tenant "7": options function returned nil options`,
		},
		{
			name:    "no port",
			options: func() (*redis.Options, error) { return &redis.Options{Addr: "localhost"}, nil },
			is:      redisadapter.ErrInvalidAddr,
			want:    `redisadapter: tenant "7": invalid address "localhost": missing port in address`,
		},
		{
			name:    "port out of range",
			options: func() (*redis.Options, error) { return &redis.Options{Addr: "127.0.0.1:70000"}, nil },
			is:      redisadapter.ErrInvalidAddr,
			want:    "port out of range",
		},
		{
			name:    "port zero",
			options: func() (*redis.Options, error) { return &redis.Options{Addr: "127.0.0.1:0"}, nil },
			is:      redisadapter.ErrInvalidAddr,
			want:    "port out of range",
		},
		{
			name:    "unknown network",
			options: func() (*redis.Options, error) { return &redis.Options{Network: "udp", Addr: "127.0.0.1:6379"}, nil },
			is:      redisadapter.ErrInvalidAddr,
			want:    `unknown network "udp"`,
		},
		{
			name:    "empty socket path",
			options: func() (*redis.Options, error) { return &redis.Options{Network: "unix"}, nil },
			is:      redisadapter.ErrInvalidAddr,
			want:    "empty unix socket path",
		},
		{
			name: "URL in Addr",
			options: func() (*redis.Options, error) {
				return &redis.Options{Addr: "redis://admin:" + secret + "@127.0.0.1:6379/0"}, nil
			},
			is:   redisadapter.ErrInvalidAddr,
			want: `invalid address "redis://admin:xxxxx@127.0.0.1:6379/0": a URL`,
		},
		{
			name: "URL that does not parse",
			options: func() (*redis.Options, error) {
				return redis.ParseURL("redis://admin:" + secret + "@127.0.0.1:notaport/0")
			},
			want: "redis://admin:xxxxx@127.0.0.1:notaport/0",
		},
		{
			name: "wrong password",
			options: func() (*redis.Options, error) {
				o := f.options(7)
				o.Username, o.Password = "nobody-"+runID, secret
				return o, nil
			},
			want: "WRONGPASS",
			addr: f.options(7).Addr,
		},
		{
			name: "connection refused",
			options: func() (*redis.Options, error) {
				return &redis.Options{Addr: refused, Password: secret, DialerRetries: 1, MaxRetries: -1}, nil
			},
			want: "connection refused",
			addr: refused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			c, err := redisadapter.New(redisadapter.Options[int]{
				Client:      func(context.Context, int) (*redis.Options, error) { return tt.options() },
				PingTimeout: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.Get(context.Background(), 7)
			if err == nil {
				t.Fatalf("Get(7) = %p, nil; want an error", rc)
			}
			t.Logf("Get(7): %v", err)
			var be *redisadapter.BuildError
			if !errors.As(err, &be) {
				t.Fatalf("Get(7) error %T (%v) is not a *BuildError", err, err)
			}
			if be.Tenant != "7" || be.Addr != tt.addr {
				t.Errorf("BuildError{Tenant: %q, Addr: %q}; want {%q, %q}", be.Tenant, be.Addr, "7", tt.addr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the password", err)
			}
			if n := c.Len(); n != 0 {
				t.Errorf("Len() = %d after a failed build; want 0", n)
			}
			shutdown(t, c)
			// The fake server's own goroutines are not the adapter's: after
			// a failed AUTH, under load, go-redis may leave one connection
			// that it dialed while the client closed open until the server
			// ends (miniredis serves it on a goroutine). Connections that
			// stay open are counted on the server by the eviction tests.
			verifyNoLeaks(t, leaks, goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer"),
				goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer.func2")) // its reader, since miniredis v2.40
		})
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// A server that accepts connections and never answers: the build gives up
// at PingTimeout and closes the connections it opened.
func TestPingTimeout(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- conn
		}
	}()

	const timeout = 200 * time.Millisecond
	c, err := redisadapter.New(redisadapter.Options[int]{
		Client: func(context.Context, int) (*redis.Options, error) {
			return &redis.Options{Addr: l.Addr().String(), ReadTimeout: 30 * time.Second}, nil
		},
		PingTimeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = c.Get(context.Background(), 1)
	elapsed := time.Since(began)
	t.Logf("Get(1) after %v: %v", elapsed, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get(1) = %v; want an error matching context.DeadlineExceeded", err)
	}
	if want := `redisadapter: tenant "1" at ` + l.Addr().String() + ": ping: no reply to PING within 200ms"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Get(1) = %v; want an error starting %q", err, want)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("Get(1) took %v with PingTimeout %v (and ReadTimeout 30s)", elapsed, timeout)
	}
	shutdown(t, c)
	l.Close()

	// Every connection the build opened was closed by the client.
	n := 0
	for conn := range accepted {
		n++
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Errorf("connection %d still open: %v", n, err)
		}
		conn.Close()
	}
	if n == 0 {
		t.Error("the build opened no connection")
	}
	verifyNoLeaks(t, leaks)
}

// The build's context carries the values of the caller that started it.
func TestOptionsFunctionGetsCallerValues(t *testing.T) {
	type ctxKey struct{}
	f := newFleet(t, 1, false)
	c := newCache(t, redisadapter.Options[int]{
		Client: func(ctx context.Context, tenant int) (*redis.Options, error) {
			if ctx.Value(ctxKey{}) != "request-42" {
				return nil, fmt.Errorf("ctx value = %v", ctx.Value(ctxKey{}))
			}
			return f.options(tenant), nil
		},
	})
	ctx := context.WithValue(context.Background(), ctxKey{}, "request-42")
	if _, err := c.Get(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// The adapter copies the options it is given and never modifies them.
func TestOptionsNotModified(t *testing.T) {
	f := newFleet(t, 2, false)
	ctx := context.Background()

	t.Run("redis.Options", func(t *testing.T) {
		shared := f.options(1) // the same *redis.Options for every tenant
		before := fmt.Sprintf("%#v", *shared)
		c := newCache(t, redisadapter.Options[int]{
			Client: func(context.Context, int) (*redis.Options, error) { return shared, nil },
		})
		for tenant := range 2 {
			rc, err := c.Get(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Options() == shared {
				t.Error("the client uses the caller's *redis.Options")
			}
		}
		if after := fmt.Sprintf("%#v", *shared); after != before {
			t.Errorf("options changed by the build:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("redis.UniversalOptions", func(t *testing.T) {
		addrs := []string{f.options(1).Addr}
		shared := &redis.UniversalOptions{Addrs: addrs, DB: 1}
		before := fmt.Sprintf("%#v", *shared)
		c, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{
			Client: func(context.Context, int) (*redis.UniversalOptions, error) { return shared, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(t, c)
		if _, err := c.Get(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if after := fmt.Sprintf("%#v", *shared); after != before || &shared.Addrs[0] != &addrs[0] || addrs[0] != f.options(1).Addr {
			t.Errorf("options changed by the build:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("empty Addrs in cluster mode", func(t *testing.T) {
		// go-redis fills in a default address when Addrs is empty; that
		// must happen on the adapter's copy.
		refuse := func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("refused by the test's dialer")
		}
		shared := &redis.UniversalOptions{IsClusterMode: true, Dialer: refuse, MaxRetries: -1, DialerRetries: 1}
		c, err := redisadapter.NewUniversal(redisadapter.UniversalOptions[int]{
			Client:      func(context.Context, int) (*redis.UniversalOptions, error) { return shared, nil },
			PingTimeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(t, c)
		if _, err := c.Get(ctx, 0); err == nil {
			t.Fatal("Get through a refusing dialer succeeded")
		}
		if shared.Addrs != nil {
			t.Errorf("Addrs = %q after the build; want nil", shared.Addrs)
		}
	})

	t.Run("adapter options", func(t *testing.T) {
		opts := redisadapter.Options[int]{
			Client:      func(context.Context, int) (*redis.Options, error) { return f.options(0), nil },
			HealthCheck: true,
		}
		c := newCache(t, opts)
		if _, err := c.Get(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if opts.Cache.Close != nil || opts.Cache.HealthCheck != nil || opts.PingTimeout != 0 {
			t.Error("New filled in defaults in the caller's Options")
		}
	})
}

// HealthCheck wires the cache's health check to PING. These tests use a
// miniredis of their own, which they stop, whatever RESCACHE_REDIS_ADDR says;
// TestServerKilledAndRestarted does the same with a real server.
func TestHealthCheck(t *testing.T) {
	ctx := context.Background()
	newServerCache := func(t *testing.T, m *miniredis.Miniredis, check func(context.Context, int, *redis.Client) error, evicted chan<- rescache.EvictReason) *rescache.Cache[int, *redis.Client] {
		return newCache(t, redisadapter.Options[int]{
			Client: func(context.Context, int) (*redis.Options, error) {
				return &redis.Options{Addr: m.Addr(), MaxRetries: -1, DialerRetries: 1}, nil
			},
			HealthCheck: true,
			Cache: rescache.Options[int, *redis.Client]{
				HealthCheck:         check,
				HealthCheckInterval: 20 * time.Millisecond,
				HealthCheckTimeout:  time.Second,
				OnEvict: func(_ int, _ *redis.Client, r rescache.EvictReason) {
					evicted <- r
				},
			},
		})
	}

	t.Run("evicts a client whose server is gone", func(t *testing.T) {
		m := miniredis.RunT(t)
		evicted := make(chan rescache.EvictReason, 1)
		c := newServerCache(t, m, nil, evicted)
		if _, err := c.Get(ctx, 1); err != nil {
			t.Fatal(err)
		}
		m.Close()
		select {
		case r := <-evicted:
			if r != rescache.EvictUnhealthy {
				t.Fatalf("evicted with reason %v; want %v", r, rescache.EvictUnhealthy)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("not evicted within 5s of the server's stop; Stats %+v", c.Stats())
		}
		if s := c.Stats(); s.HealthCheckErrors == 0 {
			t.Errorf("Stats.HealthCheckErrors = 0 after an unhealthy eviction")
		}
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
		rc, err := c.Get(ctx, 1)
		if err != nil {
			t.Fatalf("Get after the restart: %v", err)
		}
		if err := rc.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING after the restart: %v", err)
		}
	})

	t.Run("keeps a check of your own", func(t *testing.T) {
		m := miniredis.RunT(t)
		var mu sync.Mutex
		checks := 0
		own := func(context.Context, int, *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			checks++
			return nil
		}
		evicted := make(chan rescache.EvictReason, 1)
		c := newServerCache(t, m, own, evicted)
		if _, err := c.Get(ctx, 1); err != nil {
			t.Fatal(err)
		}
		m.Close()
		mu.Lock()
		base := checks
		mu.Unlock()
		waitFor(t, 5*time.Second, "three checks of our own after the stop", func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return checks >= base+3, fmt.Sprintf("%d checks", checks-base)
		})
		select {
		case r := <-evicted:
			t.Fatalf("evicted (%v) although our own check passes", r)
		default:
		}
	})
}
