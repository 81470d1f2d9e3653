package rescache

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of leak reporting: what Shutdown says about leases still out.

// Shutdown's report counts leases and names each key once, even when a
// key's value was replaced while leased.
func TestShutdownReportNamesEachKeyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b builder
		c, err := New(b.build, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		l1, _ := c.Lease(ctx, "k")
		if err := c.Refresh(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		l2, _ := c.Lease(ctx, "k")
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err = c.Shutdown(sctx)
		if err == nil || !strings.Contains(err.Error(), "2 leases still out, on k") || strings.Contains(err.Error(), "k, k") {
			t.Errorf("Shutdown: %v; want 2 leases on k, named once", err)
		}
		l1.Release()
		l2.Release()
		if err := c.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
