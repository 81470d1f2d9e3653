package sqladapter_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rescache/rescache"
	"github.com/rescache/rescache/sqladapter"
)

// newPickCache returns a cache whose every tenant connects through d, with
// the pool settings s, closed at the end of the test.
func newPickCache(t *testing.T, d *pickDriver, s sqladapter.PoolSettings, edit func(*sqladapter.Options[string])) *rescache.Cache[string, *sql.DB] {
	t.Helper()
	opts := sqladapter.Options[string]{
		Connector: func(context.Context, string) (driver.Connector, error) { return d, nil },
		Pool:      func(string) sqladapter.PoolSettings { return s },
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := sqladapter.New(opts)
	if err != nil {
		t.Fatalf("sqladapter.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// queryID runs "SELECT id" on db and returns the connection's number.
func queryID(t *testing.T, db *sql.DB) int {
	t.Helper()
	var id int
	if err := db.QueryRowContext(context.Background(), "SELECT id").Scan(&id); err != nil {
		t.Fatalf("SELECT id: %v", err)
	}
	return id
}

// holdConns takes n connections of db at once and returns them in the
// order taken; closing them in that order returns connection 1 first.
func holdConns(t *testing.T, db *sql.DB, n int) []*sql.Conn {
	t.Helper()
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns
}

// TestPickOrder: under LeastRecentlyUsed every idle connection serves in
// turn, oldest-returned first, and its session is reset on each reuse;
// under MostRecentlyUsed (database/sql) the one returned last serves again.
func TestPickOrder(t *testing.T) {
	for _, tt := range []struct {
		pick sqladapter.Pick
		want []int
	}{
		{sqladapter.LeastRecentlyUsed, []int{1, 2, 3, 4, 1, 2, 3, 4}},
		{sqladapter.MostRecentlyUsed, []int{4, 4, 4, 4, 4, 4, 4, 4}},
	} {
		t.Run(tt.pick.String(), func(t *testing.T) {
			d := newPickDriver(t)
			c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 4, MaxIdleConns: 4, Pick: tt.pick}, nil)
			db, err := c.Get(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			// The build's ping opened connection 1 and put it back.
			for _, conn := range holdConns(t, db, 4) {
				conn.Close()
			}
			var got []int
			for range 8 {
				got = append(got, queryID(t, db))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("connections used = %v; want %v", got, tt.want)
			}
			if n := d.connects.Load(); n != 4 {
				t.Errorf("%d connects; want 4", n)
			}
			if tt.pick == sqladapter.LeastRecentlyUsed {
				// Each connection: reset on each of its reuses (the ping's
				// connection once more, for holdConns).
				for _, cn := range d.all() {
					want := int64(2)
					if cn.id == 1 {
						want = 3
					}
					if n := cn.resets.Load(); n != want {
						t.Errorf("connection %d reset %d times; want %d", cn.id, n, want)
					}
				}
				st := sqladapter.PoolStats(c)["acme"]
				if st.Idle != 4 || st.OpenConnections != 4 || st.InUse != 0 {
					t.Errorf("PoolStats: Idle %d, OpenConnections %d, InUse %d; want 4, 4, 0", st.Idle, st.OpenConnections, st.InUse)
				}
				if st.MaxIdleClosed != 0 {
					t.Errorf("PoolStats: MaxIdleClosed %d; want 0", st.MaxIdleClosed)
				}
				if raw := db.Stats(); raw.Idle != 0 {
					t.Errorf("db.Stats().Idle = %d; want 0 (database/sql keeps none)", raw.Idle)
				}
			}
		})
	}
}

// TestPickLimits: MaxIdleConns bounds the queue (the connections put back
// beyond it are closed and counted in MaxIdleClosed), MaxOpenConns bounds
// the connections open, in use and idle, and Close closes every idle
// connection and every one put back later.
func TestPickLimits(t *testing.T) {
	d := newPickDriver(t)
	c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 3, MaxIdleConns: 2, Pick: sqladapter.LeastRecentlyUsed}, nil)
	ctx := context.Background()
	db, err := c.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	held := holdConns(t, db, 3)
	// A fourth waits: MaxOpenConns.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := db.Conn(wctx); err == nil {
		t.Error("a fourth connection opened over MaxOpenConns 3")
	}
	cancel()
	for _, conn := range held {
		conn.Close()
	}
	st := sqladapter.PoolStats(c)["acme"]
	if st.Idle != 2 || st.OpenConnections != 2 || st.MaxIdleClosed != 1 {
		t.Errorf("PoolStats: Idle %d, OpenConnections %d, MaxIdleClosed %d; want 2, 2, 1", st.Idle, st.OpenConnections, st.MaxIdleClosed)
	}
	if n := d.open.Load(); n != 2 {
		t.Errorf("%d connections open on the driver; want 2", n)
	}
	if p := d.peak.Load(); p > 3 {
		t.Errorf("%d connections open at once; want at most MaxOpenConns 3", p)
	}

	// Close while one is held: the idle ones close at once, the held one
	// when it is put back.
	held = holdConns(t, db, 1)
	c.Invalidate("acme") // closes the pool (on the cache's hook goroutine)
	waitOpen(t, d, 1)
	held[0].Close()
	if n := d.open.Load(); n != 0 {
		t.Errorf("%d connections open after the held one was put back; want 0", n)
	}
}

// waitOpen waits, bounded, until d has n connections open.
func waitOpen(t *testing.T, d *pickDriver, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.open.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open; want %d", d.open.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPickResetAndValidator: a connection whose IsValid answers false when
// it is put back is closed, not kept; an idle connection whose session
// reset fails with driver.ErrBadConn is closed and the next one serves.
func TestPickResetAndValidator(t *testing.T) {
	d := newPickDriver(t)
	c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 4, MaxIdleConns: 4, Pick: sqladapter.LeastRecentlyUsed}, nil)
	db, err := c.Get(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	held := holdConns(t, db, 3)
	d.conn(2).invalid.Store(true)
	for _, conn := range held {
		conn.Close()
	}
	if !d.conn(2).closed.Load() {
		t.Error("connection 2, invalid when put back, was not closed")
	}
	d.conn(1).resetBad.Store(true)
	if id := queryID(t, db); id != 3 {
		t.Errorf("query ran on connection %d; want 3 (1 fails its reset, 2 was invalid)", id)
	}
	if !d.conn(1).closed.Load() {
		t.Error("connection 1, whose reset failed, was not closed")
	}
	if n := d.connects.Load(); n != 3 {
		t.Errorf("%d connects; want 3", n)
	}
}

// TestPickBadConn: a query that gets driver.ErrBadConn on idle connections
// is retried as database/sql retries it: twice on idle connections, then
// on a new one; the bad connections are closed, not put back.
func TestPickBadConn(t *testing.T) {
	d := newPickDriver(t)
	c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 8, MaxIdleConns: 8, Pick: sqladapter.LeastRecentlyUsed}, nil)
	db, err := c.Get(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, conn := range holdConns(t, db, 4) {
		conn.Close()
	}
	// The server restarted: every idle connection is dead, but the driver
	// notices only when it sends a query (no Validator, no reset check).
	for _, cn := range d.all() {
		cn.bad.Store(true)
	}
	if id := queryID(t, db); id != 5 {
		t.Errorf("query ran on connection %d; want a new one, 5", id)
	}
	for _, id := range []int{1, 2} {
		if !d.conn(id).closed.Load() {
			t.Errorf("bad connection %d was not closed", id)
		}
	}
	// The good connection came back: idle connections are taken again
	// (3 and 4, bad: retried, then a new one).
	if id := queryID(t, db); id != 6 {
		t.Errorf("second query ran on connection %d; want a new one, 6", id)
	}
	st := sqladapter.PoolStats(c)["acme"]
	if st.Idle != 2 || st.OpenConnections != 2 {
		t.Errorf("PoolStats: Idle %d, OpenConnections %d; want 2, 2", st.Idle, st.OpenConnections)
	}
	if n := d.open.Load(); n != 2 {
		t.Errorf("%d connections open on the driver; want 2", n)
	}
}

// TestPickExpiry: lifetimes are drawn once per connection, in (0.9, 1] x
// ConnMaxLifetime, so that connections opened together close at different
// times and none outlives ConnMaxLifetime; idle connections close after
// ConnMaxIdleTime, without a query to notice them.
func TestPickExpiry(t *testing.T) {
	t.Run("lifetime", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const n = 16
			d := newPickDriver(t)
			c := newPickCache(t, d, sqladapter.PoolSettings{
				MaxOpenConns: n, MaxIdleConns: n, Pick: sqladapter.LeastRecentlyUsed,
				ConnMaxLifetime: 10 * time.Minute, ConnMaxIdleTime: time.Hour,
			}, nil)
			db, err := c.Get(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for _, conn := range holdConns(t, db, n) {
				conn.Close()
			}
			// Closed by the timer while idle, one by one.
			closedAt := map[int]time.Duration{}
			for len(closedAt) < n && time.Since(start) < 11*time.Minute {
				time.Sleep(time.Second)
				synctest.Wait()
				for _, cn := range d.all() {
					if _, ok := closedAt[cn.id]; !ok && cn.closed.Load() {
						closedAt[cn.id] = time.Since(start)
					}
				}
			}
			distinct := map[time.Duration]bool{}
			for id, at := range closedAt {
				if at <= 9*time.Minute || at > 10*time.Minute+time.Second {
					t.Errorf("connection %d closed after %v; want within (9m, 10m]", id, at)
				}
				distinct[at] = true
			}
			if len(closedAt) != n {
				t.Errorf("%d of %d connections closed within 11m", len(closedAt), n)
			}
			if len(distinct) < n/2 {
				t.Errorf("%d connections opened together closed at only %d distinct seconds: %v", n, len(distinct), closedAt)
			}
			if st := sqladapter.PoolStats(c)["acme"]; st.MaxLifetimeClosed != n || st.Idle != 0 {
				t.Errorf("PoolStats: MaxLifetimeClosed %d, Idle %d; want %d, 0", st.MaxLifetimeClosed, st.Idle, n)
			}
		})
	})
	t.Run("lifetime of a busy connection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			d := newPickDriver(t)
			c := newPickCache(t, d, sqladapter.PoolSettings{
				MaxOpenConns: 1, MaxIdleConns: 1, Pick: sqladapter.LeastRecentlyUsed, ConnMaxLifetime: time.Minute,
			}, nil)
			db, err := c.Get(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			// Used every second: put back past its lifetime, it is closed.
			for range 70 {
				queryID(t, db)
				time.Sleep(time.Second)
			}
			if n := d.connects.Load(); n != 2 {
				t.Errorf("%d connects in 70s with ConnMaxLifetime 1m; want 2", n)
			}
			if st := sqladapter.PoolStats(c)["acme"]; st.MaxLifetimeClosed != 1 {
				t.Errorf("PoolStats: MaxLifetimeClosed %d; want 1", st.MaxLifetimeClosed)
			}
		})
	})
	t.Run("idle time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			d := newPickDriver(t)
			c := newPickCache(t, d, sqladapter.PoolSettings{
				MaxOpenConns: 4, MaxIdleConns: 4, Pick: sqladapter.LeastRecentlyUsed, ConnMaxIdleTime: time.Minute,
			}, nil)
			db, err := c.Get(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			held := holdConns(t, db, 4)
			for _, conn := range held[:2] {
				conn.Close()
			}
			time.Sleep(30 * time.Second)
			for _, conn := range held[2:] {
				conn.Close()
			}
			time.Sleep(31 * time.Second)
			synctest.Wait()
			if st := sqladapter.PoolStats(c)["acme"]; st.Idle != 2 || st.MaxIdleTimeClosed != 2 {
				t.Errorf("61s after: PoolStats Idle %d, MaxIdleTimeClosed %d; want 2, 2", st.Idle, st.MaxIdleTimeClosed)
			}
			time.Sleep(30 * time.Second)
			synctest.Wait()
			if st := sqladapter.PoolStats(c)["acme"]; st.Idle != 0 || st.MaxIdleTimeClosed != 4 {
				t.Errorf("91s after: PoolStats Idle %d, MaxIdleTimeClosed %d; want 0, 4", st.Idle, st.MaxIdleTimeClosed)
			}
			if n := d.open.Load(); n != 0 {
				t.Errorf("%d connections open; want 0", n)
			}
		})
	})
}

// TestPickBudgetReclaim: under MaxTotalConns, an idle connection kept by
// the pick holds its place in the budget, and a tenant that needs a place
// when the budget is full takes back the idle connections of the pick's
// queue of the least recently used other tenant.
func TestPickBudgetReclaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newPickDriver(t)
		c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 4, MaxIdleConns: 4, Pick: sqladapter.LeastRecentlyUsed},
			func(o *sqladapter.Options[string]) { o.MaxTotalConns = 3 })
		ctx := context.Background()
		a, err := c.Get(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		for _, conn := range holdConns(t, a, 3) {
			conn.Close()
		}
		if b := sqladapter.PoolBudget(c); b.Held != 3 {
			t.Fatalf("PoolBudget().Held = %d with 3 idle connections; want 3", b.Held)
		}
		time.Sleep(time.Millisecond) // b is used after a
		other, err := c.Get(ctx, "b")
		if err != nil {
			t.Fatalf("Get(b) with a's idle connections holding the budget: %v", err)
		}
		queryID(t, other)
		st := sqladapter.PoolStats(c)
		if st["a"].Idle != 0 {
			t.Errorf("a keeps %d idle connections; want 0, reclaimed", st["a"].Idle)
		}
		if b := sqladapter.PoolBudget(c); b.Reclaimed != 3 {
			t.Errorf("PoolBudget().Reclaimed = %d; want 3", b.Reclaimed)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if b := sqladapter.PoolBudget(c); b.Held != 1 {
			t.Errorf("PoolBudget().Held = %d; want 1 (b's idle connection)", b.Held)
		}
		c.Close()
		time.Sleep(time.Second)
		synctest.Wait()
		if b := sqladapter.PoolBudget(c); b.Held != 0 {
			t.Errorf("PoolBudget().Held = %d after Close; want 0", b.Held)
		}
		if n := d.open.Load(); n != 0 {
			t.Errorf("%d connections open after Close; want 0", n)
		}
	})
}

// TestPickExclusive: under load, no connection serves two calls at once
// (pickTestConn fails the test if it does), and the connections open never
// exceed MaxOpenConns. Run it with -race.
func TestPickExclusive(t *testing.T) {
	for _, budget := range []int{0, 6} {
		synctest.Test(t, func(t *testing.T) { pickExclusive(t, budget) })
	}
}

func pickExclusive(t *testing.T, budget int) {
	d := newPickDriver(t)
	c := newPickCache(t, d, sqladapter.PoolSettings{MaxOpenConns: 4, MaxIdleConns: 3, Pick: sqladapter.LeastRecentlyUsed},
		func(o *sqladapter.Options[string]) { o.MaxTotalConns = budget })
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			tenant := []string{"a", "b"}[w%2]
			for range 200 {
				l, err := c.Lease(context.Background(), tenant)
				if err != nil {
					t.Error(err)
					return
				}
				var id int
				if err := l.Value().QueryRow("SELECT id").Scan(&id); err != nil {
					t.Error(err)
				}
				l.Release()
			}
		})
	}
	wg.Wait()
	// database/sql counts a dial under way as in use (InUse is its
	// open count less its idle ones), and its opener may still be
	// dialing for a request that a connection put back has served
	// since: with a budget, that dial waits for a place, which a
	// reclaim frees. Let every such dial end.
	time.Sleep(time.Second)
	synctest.Wait()
	if p := d.peak.Load(); p > 8 || (budget > 0 && p > int64(budget)) {
		t.Errorf("budget %d: %d connections open at once; want at most 2 x MaxOpenConns 4 and the budget", budget, p)
	}
	for tenant, st := range sqladapter.PoolStats(c) {
		if st.OpenConnections > 4 || st.Idle > 3 || st.InUse != 0 {
			t.Errorf("budget %d: tenant %s: OpenConnections %d, Idle %d, InUse %d; want <= 4, <= 3, 0", budget, tenant, st.OpenConnections, st.Idle, st.InUse)
		}
	}
}

// TestPickUnknown: a Pick other than the two fails the build.
func TestPickUnknown(t *testing.T) {
	d := newPickDriver(t)
	c := newPickCache(t, d, sqladapter.PoolSettings{Pick: 7}, nil)
	_, err := c.Get(context.Background(), "acme")
	checkTenantError(t, err, "acme", "pool")
	if sqladapter.Pick(7).String() != "Pick(7)" {
		t.Errorf("Pick(7).String() = %q", sqladapter.Pick(7).String())
	}
}
