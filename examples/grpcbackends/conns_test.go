package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rescache/rescache"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startBackends(t *testing.T, n int) []*Backend {
	t.Helper()
	bs := make([]*Backend, n)
	for i := range bs {
		b, err := StartBackend()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
		bs[i] = b
	}
	return bs
}

func newConns(t *testing.T, o ConnOptions) *rescache.Cache[string, *grpc.ClientConn] {
	t.Helper()
	c, err := NewConns(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

// eventually polls cond every 10 ms for up to 5 s (real servers: no
// synctest bubble).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Many concurrent calls to each backend share one connection per backend,
// dialled once, and every call reaches its backend.
func TestOneConnectionPerBackend(t *testing.T) {
	bs := startBackends(t, 3)
	c := newConns(t, ConnOptions{})
	var wg sync.WaitGroup
	for _, b := range bs {
		for range 20 {
			wg.Go(func() {
				if err := call(context.Background(), c, b.Addr); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if s := c.Stats(); s.Builds != 3 || s.Entries != 3 {
		t.Errorf("Builds %d, Entries %d; want one connection per backend", s.Builds, s.Entries)
	}
	for _, b := range bs {
		if b.Conns() != 1 || b.Calls() != 21 { // 20 calls and the build's health check
			t.Errorf("backend %s accepted %d connections and served %d calls; want 1 and 21", b.Addr, b.Conns(), b.Calls())
		}
	}
}

// A lease keeps its connection open across an eviction: the call on it
// goes through, and the connection closes at the release.
func TestLeaseKeepsConnectionAcrossEviction(t *testing.T) {
	bs := startBackends(t, 2)
	var mu sync.Mutex
	var left []string
	c := newConns(t, ConnOptions{MaxConns: 1, OnClose: func(addr string, r rescache.EvictReason) {
		mu.Lock()
		left = append(left, addr+" "+r.String())
		mu.Unlock()
	}})
	ctx := context.Background()
	l, err := c.Lease(ctx, bs[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, c, bs[1].Addr); err != nil { // evicts bs[0]'s connection
		t.Fatal(err)
	}
	mu.Lock()
	if len(left) != 1 || left[0] != bs[0].Addr+" capacity" {
		t.Errorf("left the cache: %v; want %s by capacity", left, bs[0].Addr)
	}
	mu.Unlock()
	cc := l.Value()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("a call on the leased, evicted connection: %v", err)
	}
	if s := cc.GetState(); s == connectivity.Shutdown {
		t.Error("the leased connection was closed before its release")
	}
	l.Release()
	eventually(t, "the evicted connection closes at its release", func() bool { return cc.GetState() == connectivity.Shutdown })
}

// A backend that reports NOT_SERVING loses its connection at the next
// health round; the connection is closed and a new call does not cache a
// connection to it.
func TestUnhealthyBackendLosesItsConnection(t *testing.T) {
	bs := startBackends(t, 2)
	c := newConns(t, ConnOptions{HealthInterval: 20 * time.Millisecond, HealthTimeout: time.Second})
	ctx := context.Background()
	for _, b := range bs {
		if err := call(ctx, c, b.Addr); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := c.Peek(bs[0].Addr)
	bs[0].SetServing(false)
	eventually(t, "the health check evicts the connection", func() bool {
		return c.Stats().EvictionsByReason[rescache.EvictUnhealthy] == 1
	})
	eventually(t, "the evicted connection is closed", func() bool { return v.GetState() == connectivity.Shutdown })
	if _, ok := c.Peek(bs[1].Addr); !ok {
		t.Error("the healthy backend's connection left too")
	}
	err := call(ctx, c, bs[0].Addr)
	if !errors.Is(err, ErrNotServing) || !strings.Contains(err.Error(), bs[0].Addr) {
		t.Errorf("a call to the NOT_SERVING backend: %v; want ErrNotServing naming it", err)
	}
	if _, ok := c.Peek(bs[0].Addr); ok {
		t.Error("a connection to a NOT_SERVING backend was cached")
	}
}

// An address where nothing listens: the build fails within DialTimeout,
// names the address, caches nothing and leaves no goroutine (TestMain's
// goleak).
func TestDeadBackendIsNotCached(t *testing.T) {
	b := startBackends(t, 1)[0]
	addr := b.Addr
	b.Stop()
	c := newConns(t, ConnOptions{DialTimeout: 200 * time.Millisecond})
	err := call(context.Background(), c, addr)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("a call to a stopped backend: %v; want an error naming %s", err, addr)
	}
	// The caller has its answer when the build finishes; the build counts
	// as pending until its function has returned.
	eventually(t, "the failed build is done", func() bool { return c.Stats().Pending == 0 })
	if s := c.Stats(); s.Entries != 0 {
		t.Errorf("Entries %d after a failed dial; want 0", s.Entries)
	}
}

// The program runs end to end and says what it did.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-backends", "3", "-calls", "30"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"30 calls over 3 backends", "client connections dialled: 3, open: 3", "left the cache: unhealthy", "backend is not serving"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
