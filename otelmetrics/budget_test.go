package otelmetrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/rescache/rescache/budget"
	"github.com/rescache/rescache/otelmetrics"
)

// RegisterBudget reports a budget's figures: a Local budget's places held
// and waits, and the fleet fields of its Stats.
func TestRegisterBudget(t *testing.T) {
	mp, r := newReader(t)
	l, err := budget.NewLocal(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := otelmetrics.RegisterBudget(mp.Meter("test"), "tenants", l.Stats); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l.Acquire(ctx)
	l.Acquire(ctx)
	full, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	l.Acquire(full) // waits, then gives up: one wait
	got := collect(t, r)
	const at = "rescache.cache=tenants"
	for name, want := range map[string]float64{
		"rescache.budget.max": 2, "rescache.budget.held": 2, "rescache.budget.fleet_held": 2,
		"rescache.budget.waiting": 0, "rescache.budget.fallback": 0, "rescache.budget.waits": 1,
		"rescache.budget.renew_failures": 0, "rescache.budget.fallbacks": 0,
	} {
		if v, ok := value(got, name, at); !ok || v != want {
			t.Errorf("%s = %v (reported %v); want %v", name, v, ok, want)
		}
	}
	if v, _ := value(got, "rescache.budget.wait.time", at); v <= 0 {
		t.Errorf("rescache.budget.wait.time = %v; want the wait's time", v)
	}
	if _, err := otelmetrics.RegisterBudget(mp.Meter("test"), "x", nil); err == nil {
		t.Error("RegisterBudget with a nil function: no error")
	}
}
