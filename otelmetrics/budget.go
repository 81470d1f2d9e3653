package otelmetrics

import (
	"context"
	"errors"
	"fmt"

	"github.com/rescache/rescache/budget"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterBudget creates on meter the rescache.budget.* instruments and
// registers a callback that reports stats (the Stats method of a
// budget.Budget: a budget.Local, or budget/redisbudget's fleet budget, as
// passed to an adapter's Options.Budget) at each collection, every point
// with the attribute rescache.cache=name.
//
// Up-down counters (the state at the collection): rescache.budget.max (the
// budget's size; the fleet's for a fleet budget), rescache.budget.held
// (places this process holds), rescache.budget.fleet_held (places the
// whole fleet holds, as last seen; held for a budget of one process),
// rescache.budget.waiting and rescache.budget.fallback (1 while a fleet
// budget is on its local fallback share). Counters: rescache.budget.waits,
// rescache.budget.wait.time (seconds), rescache.budget.renew_failures and
// rescache.budget.fallbacks.
//
// Call Unregister on the returned registration to stop reporting. An error
// is returned when meter cannot create an instrument or register the
// callback; nothing stays registered then.
func RegisterBudget(meter metric.Meter, name string, stats func() budget.Stats) (metric.Registration, error) {
	if stats == nil {
		return nil, errors.New("otelmetrics: RegisterBudget with a nil stats function")
	}
	in := &instruments{meter: meter}
	counter, gauge := in.counter, in.gauge
	maxPlaces := gauge("rescache.budget.max", "{connection}", "Size of the connection budget (of the whole fleet, for a fleet budget).")
	held := gauge("rescache.budget.held", "{connection}", "Places of the budget this process holds.")
	fleetHeld := gauge("rescache.budget.fleet_held", "{connection}", "Places the whole fleet holds, as last seen.")
	waiting := gauge("rescache.budget.waiting", "{connection}", "Connections waiting for a place.")
	fallback := gauge("rescache.budget.fallback", "1", "1 while a fleet budget is on its local fallback share.")
	waits := counter("rescache.budget.waits", "{connection}", "Connections that found the budget full and waited.")
	waitTime := in.seconds("rescache.budget.wait.time", "Time connections waited for a place.")
	renewFailures := counter("rescache.budget.renew_failures", "{renewal}", "Failed lease renewals of a fleet budget.")
	fallbacks := counter("rescache.budget.fallbacks", "{switch}", "Switches of a fleet budget to its local fallback share.")
	if err := in.err(); err != nil {
		return nil, fmt.Errorf("otelmetrics: creating the budget instruments: %w", err)
	}
	at := metric.WithAttributeSet(attribute.NewSet(CacheKey.String(name)))
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := stats()
		o.ObserveInt64(maxPlaces, int64(s.Max), at)
		o.ObserveInt64(held, int64(s.Held), at)
		o.ObserveInt64(fleetHeld, int64(s.FleetHeld), at)
		o.ObserveInt64(waiting, int64(s.Waiting), at)
		fb := int64(0)
		if s.Fallback {
			fb = 1
		}
		o.ObserveInt64(fallback, fb, at)
		o.ObserveInt64(waits, s.WaitCount, at)
		o.ObserveFloat64(waitTime, s.WaitDuration.Seconds(), at)
		o.ObserveInt64(renewFailures, s.RenewFailures, at)
		o.ObserveInt64(fallbacks, s.Fallbacks, at)
		return nil
	}, in.obs...)
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: registering the budget callback: %w", err)
	}
	return reg, nil
}
