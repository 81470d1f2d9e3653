package contender

import (
	"context"
	"testing"
	"time"
)

// smallBurst is a burst small enough for the race detector.
var smallBurst = BurstLoad{
	Tenants: 40, PerTenant: 3, MaxEntries: 10, PoolSize: 2,
	Connect: 100 * time.Microsecond, Use: time.Millisecond,
	BudgetWait: time.Second, Timeout: 5 * time.Second,
}

// TestBurstLeases checks what the seedtable's second table claims for
// rescache with leases: no request fails, the budget bounds the peak, and
// nothing is left open after Close.
func TestBurstLeases(t *testing.T) {
	for _, budget := range []int{0, 15} {
		l := smallBurst
		l.Budget = budget
		r, err := l.Run(context.Background(), RescacheAcquire)
		if err != nil {
			t.Fatal(err)
		}
		if r.Failed != 0 || r.LeftOpen != 0 || r.Builds < int64(l.Tenants) {
			t.Errorf("budget %d: %+v; want no failure, nothing left open, at least %d builds", budget, r, l.Tenants)
		}
		if budget > 0 && r.Peak > int64(budget) {
			t.Errorf("budget %d: peak %d connections", budget, r.Peak)
		}
	}
}

// TestBurstEveryCloser runs the burst with every contender of the second
// table, for the race detector, and checks the budget holds for each.
func TestBurstEveryCloser(t *testing.T) {
	for _, c := range Closers {
		l := smallBurst
		l.Budget = 15
		r, err := l.Run(context.Background(), c)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if r.Peak > 15 || r.Requests != int64(l.Tenants*l.PerTenant) {
			t.Errorf("%s: %+v; want a peak of at most 15 and %d requests", c.Name, r, l.Tenants*l.PerTenant)
		}
	}
}

func TestChurnLeases(t *testing.T) {
	l := ChurnLoad{Tenants: 2000, MaxEntries: 50, Requests: 5000, Workers: 16, Build: 50 * time.Microsecond, Use: 20 * time.Microsecond}
	r, err := l.Run(context.Background(), RescacheAcquire)
	if err != nil {
		t.Fatal(err)
	}
	if r.UsedAfterClose != 0 || r.Errors != 0 || r.DoubleCloses != 0 || r.Builds == 0 {
		t.Errorf("churn with leases: %+v; want builds, and no use after close, error or double close", r)
	}
}

func TestServerPoolCounts(t *testing.T) {
	srv := &Server{}
	p := newSimPool(srv, 2)
	ctx := context.Background()
	if err := p.conn(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.conn(ctx); err != nil {
		t.Fatal(err)
	}
	p.put()
	if srv.Open() != 2 || srv.Peak() != 2 {
		t.Errorf("after two conns and one put: open %d, peak %d; want 2, 2", srv.Open(), srv.Peak())
	}
	p.close() // closes the idle one
	if srv.Open() != 1 {
		t.Errorf("after close with one in use: open %d; want 1", srv.Open())
	}
	if err := p.conn(ctx); err != errPoolClosed {
		t.Errorf("conn on a closed pool = %v; want %v", err, errPoolClosed)
	}
	p.put() // the one in use closes on return
	if srv.Open() != 0 {
		t.Errorf("after the last put: open %d; want 0", srv.Open())
	}
}
