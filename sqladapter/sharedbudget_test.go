package sqladapter_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/rescache/rescache/budget"
	"github.com/rescache/rescache/sqladapter"
)

func TestBudgetAndMaxTotalConnsExclusive(t *testing.T) {
	b, err := budget.NewLocal(2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sqladapter.New(sqladapter.Options[string]{
		Driver:        fakeDriverName,
		DSN:           func(context.Context, string) (string, error) { return "x", nil },
		MaxTotalConns: 2,
		Budget:        b,
	})
	if err == nil || !strings.Contains(err.Error(), "MaxTotalConns") || !strings.Contains(err.Error(), "Budget") {
		t.Errorf("New with both MaxTotalConns and Budget: error %v; want one naming both", err)
	}
}

// Two caches given one Local budget hold at most its places together; the
// idle connections of one are reclaimed for the other.
func TestSharedBudgetAcrossCaches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFakeServer(t.Name())
		b, err := budget.NewLocal(2)
		if err != nil {
			t.Fatal(err)
		}
		share := func(o *sqladapter.Options[string]) { o.MaxTotalConns = 0; o.Budget = b }
		c1 := newBudgetCache(t, srv, 0, share)
		c2 := newBudgetCache(t, srv, 0, share)
		ctx := context.Background()
		db1, err := c1.Get(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		x, err := db1.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		y, err := db1.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		x.Close()
		y.Close() // c1's tenant keeps two idle connections: the whole budget
		if st := b.Stats(); st.Held != 2 {
			t.Fatalf("Held = %d; want 2", st.Held)
		}
		db2, err := c2.Get(ctx, "b")
		if err != nil {
			t.Fatalf("the other cache's first tenant, with the budget held by idle connections: %v", err)
		}
		synctest.Wait()
		if n := srv.open.Load(); n > 2 {
			t.Errorf("%d connections open; want at most 2", n)
		}
		if got := sqladapter.PoolBudget(c1).Reclaimed; got != 2 {
			t.Errorf("Reclaimed from the first cache = %d; want 2", got)
		}
		if st := sqladapter.PoolBudget(c2); st.MaxTotalConns != 2 || st.Held != 1 || st.FleetHeld != 1 {
			t.Errorf("PoolBudget(c2) = %+v; want MaxTotalConns 2, Held 1, FleetHeld 1", st)
		}
		_ = db2
		if err := c2.Close(); err != nil {
			t.Error(err)
		}
		checkDrained(t, c1, srv) // the connections of both, on one server
	})
}
