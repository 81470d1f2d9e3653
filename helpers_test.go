package rescache

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Helpers shared by the core tests: a resource that counts its closes, a
// builder that counts its builds, and small constructors.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// resource is a value that knows whether it was closed, and how often.
type resource struct {
	key    string
	gen    int
	closes atomic.Int32
}

func (r *resource) Close() error {
	r.closes.Add(1)
	return nil
}

func (r *resource) closed() bool { return r.closes.Load() > 0 }

// builder builds *resource values and counts builds per key.
type builder struct {
	mu     sync.Mutex
	builds map[string]int
	all    []*resource
}

func (b *builder) build(_ context.Context, key string) (*resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.builds == nil {
		b.builds = map[string]int{}
	}
	b.builds[key]++
	r := &resource{key: key, gen: b.builds[key]}
	b.all = append(b.all, r)
	return r, nil
}

func (b *builder) count(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.builds[key]
}

// checkAllClosedOnce fails unless every value built was closed exactly once.
func (b *builder) checkAllClosedOnce(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.all {
		if n := r.closes.Load(); n != 1 {
			t.Errorf("value %s#%d closed %d times; want 1", r.key, r.gen, n)
		}
	}
}

// newTestCache returns a cache that is shut down when the test ends.
func newTestCache[V any](t *testing.T, build func(context.Context, string) (V, error), opts *Options[string, V]) *Cache[string, V] {
	t.Helper()
	c, err := New(build, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil && !errors.Is(err, errClose) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

var errClose = errors.New("close failed on purpose")

func mustGet[V any](t *testing.T, c *Cache[string, V], key string) V {
	t.Helper()
	v, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

// runningCounter counts builds that run, not counting a build while it
// waits in a nested Get (it has lent its slot).
type runningCounter struct {
	n, peak atomic.Int32
}

func (r *runningCounter) enter() {
	n := r.n.Add(1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (r *runningCounter) exit() { r.n.Add(-1) }

// syncBuffer is a bytes.Buffer safe for the logger's writes from the hook
// goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
