package rescache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// openMeter counts values built and not yet closed, and the most ever open
// at once. A value counts from the moment its build returns.
type openMeter struct {
	open, peak, built atomic.Int64
}

func (m *openMeter) built1() {
	m.built.Add(1)
	n := m.open.Add(1)
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// TestMaxEntriesBoundsOpenValuesUnderChurn: callers that ask for new keys
// as fast as they can, through MaxEntries, never have more values open
// than MaxEntries + closeBacklog + the builds running, whatever Close
// costs: instant, 1 ms, or blocking until the test lets it go. Callers of
// a found key never wait meanwhile, and a caller that waits for room
// leaves when its ctx ends.
func TestMaxEntriesBoundsOpenValuesUnderChurn(t *testing.T) {
	const (
		maxEntries = 16
		callers    = 16
		perCaller  = 400
	)
	for _, policy := range []Policy{LRU, TinyLFU} {
		for _, closeKind := range []string{"instant", "1ms", "blocking"} {
			t.Run(fmt.Sprintf("%v/%s", policy, closeKind), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var m openMeter
					var next atomic.Int64
					unblock := make(chan struct{})
					c, err := New(func(ctx context.Context, key string) (int64, error) {
						m.built1()
						return 0, nil
					}, &Options[string, int64]{
						MaxEntries: maxEntries,
						Policy:     policy,
						Close: func(key string, v int64) error {
							switch closeKind {
							case "1ms":
								time.Sleep(time.Millisecond)
							case "blocking":
								<-unblock
							}
							m.open.Add(-1)
							return nil
						},
					})
					if err != nil {
						t.Fatal(err)
					}
					bound := int64(maxEntries + closeBacklog)

					var wg sync.WaitGroup
					var timedOut atomic.Int64
					for range callers {
						wg.Go(func() {
							for range perCaller {
								key := fmt.Sprint("k", next.Add(1))
								ctx := context.Background()
								if closeKind == "blocking" {
									// Waiting for room is all that bounds
									// a blocking Close: the caller leaves
									// at its deadline.
									var cancel context.CancelFunc
									ctx, cancel = context.WithTimeout(ctx, 10*time.Millisecond)
									_, err := c.Get(ctx, key)
									cancel()
									if errors.Is(err, context.DeadlineExceeded) {
										timedOut.Add(1)
										continue
									}
									if err != nil {
										t.Errorf("Get: %v", err)
										return
									}
									continue
								}
								if _, err := c.Get(ctx, key); err != nil {
									t.Errorf("Get: %v", err)
									return
								}
							}
						})
					}
					if closeKind == "blocking" {
						// Every caller is blocked at its deadline or done:
						// a found key is still served at once.
						time.Sleep(50 * time.Millisecond)
						synctest.Wait()
						var foundKey string
						for k := range c.All() {
							foundKey = k
							break
						}
						if foundKey == "" {
							t.Fatal("no found entry while the closes block")
						}
						got := make(chan error, 1)
						go func() {
							_, err := c.Get(context.Background(), foundKey)
							got <- err
						}()
						synctest.Wait()
						select {
						case err := <-got:
							if err != nil {
								t.Errorf("Get of found key %s: %v", foundKey, err)
							}
						default:
							t.Errorf("Get of found key %s waits while the closes block", foundKey)
						}
					}
					wg.Wait()
					if closeKind == "blocking" {
						if timedOut.Load() == 0 {
							t.Error("no caller waited for room while every Close blocked")
						}
						close(unblock)
					}
					if err := c.Shutdown(context.Background()); err != nil {
						t.Fatal(err)
					}
					t.Logf("built %d, at most %d open at once (bound %d), %d callers left at their deadline",
						m.built.Load(), m.peak.Load(), bound, timedOut.Load())
					if p := m.peak.Load(); p > bound {
						t.Errorf("%d values open at once; MaxEntries %d + backlog %d allow %d",
							p, maxEntries, closeBacklog, bound)
					}
					if n := m.open.Load(); n != 0 {
						t.Errorf("%d values open after Shutdown", n)
					}
				})
			})
		}
	}
}

// TestMaxEntriesBoundWithConcurrentBuildLimit: with MaxConcurrentBuilds
// the builds running are at most that many, so the bound is exact even
// with many more callers.
func TestMaxEntriesBoundWithConcurrentBuildLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxEntries, limit, callers = 8, 2, 64
		var m openMeter
		var next atomic.Int64
		c, err := New(func(ctx context.Context, key string) (int64, error) {
			m.built1()
			return 0, nil
		}, &Options[string, int64]{
			MaxEntries:          maxEntries,
			MaxConcurrentBuilds: limit,
			Close: func(string, int64) error {
				time.Sleep(time.Millisecond)
				m.open.Add(-1)
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range 50 {
					if _, err := c.Get(context.Background(), fmt.Sprint(next.Add(1))); err != nil {
						t.Errorf("Get: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if p, bound := m.peak.Load(), int64(maxEntries+closeBacklog); p > bound {
			t.Errorf("%d values open at once; bound %d", p, bound)
		}
		t.Logf("built %d, at most %d open at once", m.built.Load(), m.peak.Load())
	})
}

// TestRoomWaitEndsAtClose: a build whose value waits for room gives up at
// Close, its waiters get ErrClosed, and its value is closed.
func TestRoomWaitEndsAtClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var m openMeter
		unblock := make(chan struct{})
		c, err := New(func(ctx context.Context, key string) (int64, error) {
			m.built1()
			return 0, nil
		}, &Options[string, int64]{
			MaxEntries: 1,
			Close: func(string, int64) error {
				<-unblock
				m.open.Add(-1)
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for i := range 1 + closeBacklog {
			if _, err := c.Get(ctx, fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		errc := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, "waits")
			errc <- err
		}()
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("Get returned %v while every unit of room is taken", err)
		default:
		}
		go func() {
			synctest.Wait()
			close(unblock) // Close's own closes and the backlog's
		}()
		c.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Get waiting for room at Close: %v; want ErrClosed", err)
		}
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := m.open.Load(); n != 0 {
			t.Errorf("%d values open after Shutdown", n)
		}
	})
}
