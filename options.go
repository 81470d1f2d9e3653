package rescache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configures a [Cache]. The zero value is valid: an unbounded cache
// whose entries never expire and whose values are closed with their Close
// method when they implement [io.Closer].
//
// [New] copies the Options; changing the struct afterwards has no effect on
// the cache, and New never modifies it.
type Options[K comparable, V any] struct {
	// MaxEntries bounds the number of found entries. Adding an entry beyond
	// it evicts one (reason [EvictCapacity]): the least recently used one,
	// or the one [Options.Policy] chooses. A Get, a Lease, an Acquire or a
	// release is a use; a Peek is not.
	//
	// Recency is recorded without a lock, with the resolution of the
	// cache's clock (see [Options.ClockResolution]): among entries last used
	// within the same tick and after the same build, which one goes first
	// is unspecified.
	//
	// MaxEntries bounds the values open too, not only the entries: at
	// every instant the values built and not yet closed are at most
	// MaxEntries + max(MaxConcurrentBuilds, 16), plus the removed values
	// that a lease (or a running health check) keeps open and the values
	// of nested builds that took a unit past the bound, however fast new
	// keys arrive and however long Close takes. A build takes one of those
	// units before it starts (a nested build takes one at once, past the
	// bound if need be, since its chain's first build may hold the last),
	// and its entry keeps it until its value is closed; when all are taken (evicted values wait for a slow
	// Close on the hook goroutine), new builds wait for them in the order
	// they came, on their own goroutines, and only Close ends that wait.
	// Their callers still honour their contexts, and callers of found keys
	// never wait.
	//
	// default: 0, unbounded.
	MaxEntries int

	// Policy chooses the entry that MaxEntries evicts: [LRU], the least
	// recently used one, or [TinyLFU], which weighs recency against an
	// estimate of each key's frequency of use and keeps hot keys through
	// scans of cold ones. With either, a value just built is always
	// cached, and leases, expiry, refresh, health checks and Invalidate
	// behave the same. Without MaxEntries it has no effect. Any other
	// value makes [New] return an error.
	//
	// default: LRU.
	Policy Policy

	// IdleTimeout evicts an entry that has not been used (Get, Acquire or
	// the release of a lease) for this long (reason [EvictIdle]). An entry
	// held by a lease is not idle: its idle time starts at its last
	// release.
	//
	// default: 0, never.
	IdleTimeout time.Duration

	// MaxLifetime evicts an entry this long after its build finished, used
	// or not (reason [EvictLifetime]). Use it to rotate credentials or to
	// rebalance connections.
	//
	// default: 0, never.
	MaxLifetime time.Duration

	// RefreshAfter makes a use (Get, Acquire, Lease) of an entry older than
	// this (since its build) start a rebuild in the background, and return
	// the current value at once; the new value replaces the old one when
	// its build succeeds (see [Cache.Refresh], which does the same on
	// demand). At most one refresh per key runs at a time. A failed
	// automatic refresh keeps the old value and is retried at a use at
	// least RefreshAfter/8 after the failure (counted from the end of the
	// failed refresh: its build's return, or the BuildTimeout that ended
	// it), the wait doubling with each consecutive failure up to
	// RefreshAfter. Idle entries are not refreshed: they
	// expire. New rejects a RefreshAfter not below MaxLifetime when both
	// are set.
	//
	// default: 0, off.
	RefreshAfter time.Duration

	// LifetimeJitter shortens each entry's MaxLifetime and RefreshAfter by
	// the same random amount in [0, LifetimeJitter), one draw when the
	// entry is built, so that entries built together do not expire or refresh
	// together (a reconnection storm). New rejects a LifetimeJitter that
	// is not below the shorter of MaxLifetime and RefreshAfter, or that is
	// set without either.
	//
	// default: 0, none.
	LifetimeJitter time.Duration

	// BuildTimeout is the deadline of one build, whoever waits for it,
	// counted from the moment the build gets its slot (MaxConcurrentBuilds):
	// the wait for a slot is not part of it. The build's context is
	// cancelled when it passes, its waiters receive the timeout error at
	// once, and a value the build returns later is closed, never cached.
	//
	// default: 0, no deadline (the build ends when build returns, or when
	// the cache is closed).
	BuildTimeout time.Duration

	// MaxConcurrentBuilds bounds the builds that run at once across all
	// keys, and the health checks with them. A build that cannot start
	// waits for a slot (only Close ends that wait; a build that never got
	// a slot is not a build error and ErrorTTL never remembers it); its
	// callers still honour their own contexts while it waits.
	//
	// Nested builds: a build that calls Get or Acquire of the same cache
	// must pass its own ctx (or one derived from it). Through that ctx the
	// cache knows that the caller is a build: while it waits for the other
	// build it lends its slot (so a queued build it waits for can run, and
	// no combination of nested calls deadlocks on slots), and it takes a
	// slot back before the call returns (so no more builds than the limit
	// ever run; the call may then return after its ctx ended, once a slot
	// is free). The bound holds after Close too: a nested call that Close
	// ends takes its slot back before it returns. A nested call made with an unrelated context, such as
	// context.Background(), is an outside caller: with all slots held by
	// builds waiting on it, it waits forever (or until BuildTimeout).
	//
	// default: 0, unbounded.
	MaxConcurrentBuilds int

	// ErrorTTL makes the cache answer calls for a key whose build failed
	// with that same error, from memory, for this long (a panic is never
	// remembered). Use it to protect a
	// server that is down, or to stop unknown keys from building again and
	// again. At most MaxErrorEntries errors are remembered.
	//
	// default: 0, the next call builds again.
	ErrorTTL time.Duration

	// MaxErrorEntries bounds how many failed keys ErrorTTL remembers; the
	// least recently failed is forgotten first.
	//
	// default: 0, meaning MaxEntries, or 1024 when MaxEntries is 0.
	MaxErrorEntries int

	// Close closes a value that leaves the cache. It is called exactly once
	// for every value build returned, after the value's last lease is
	// released and after its OnEvict returned, never while the cache holds
	// a lock, never on the janitor's goroutine (whose clock a slow Close
	// would stop) and never on the goroutine of a caller of another key.
	// It runs on the goroutine that ends the value's last hold for its own
	// key (Release, Discard, Invalidate, a caller that meets the expired
	// entry, a health check, [Cache.Close], a build that finished too
	// late), and on the cache's hook goroutine, one hook at a time in the
	// order they became due, for entries that the janitor removes or that
	// another key's build evicts to make room. An error is counted in
	// [Stats.CloseErrors], logged, and returned by [Cache.Close] when the
	// value was closed there, or by [Cache.Shutdown] when it was closed
	// after Close. A panic is recovered and logged.
	//
	// default: nil, meaning v.Close() when V implements io.Closer and
	// nothing otherwise.
	Close func(key K, v V) error

	// OnEvict is told once per found entry that leaves the cache, with the
	// reason, after it left: the entry is gone from the cache when OnEvict
	// runs, and OnEvict returns before the value's Close starts (which may
	// be later if a lease holds it). It runs outside every lock of the
	// cache, on the goroutine that removed the entry for its own key
	// (Invalidate, Discard, a caller that meets the expired entry, a failed
	// health check, a refresh, [Cache.Close]) or on the cache's hook
	// goroutine for entries that the janitor removes or that another key's
	// build evicts; a panic is recovered and logged. Like Close, it must
	// not wait for a build of the same cache: with MaxEntries, a build may
	// wait for the hook goroutine to close evicted values.
	//
	// default: nil.
	OnEvict func(key K, v V, reason EvictReason)

	// HealthCheck checks an idle found entry; an error evicts the entry
	// (reason [EvictUnhealthy]) and the next call builds a fresh value.
	// Checks start every HealthCheckInterval on goroutines of their own,
	// never under a lock, never on the janitor and never on the path of
	// Get. With MaxConcurrentBuilds, each check takes a free build slot and
	// never waits for one (an entry that found none is checked at a later
	// round), so builds and checks together stay within the bound. An
	// entry that is leased, or that was used within the last
	// HealthCheckInterval, is not checked: the traffic it serves is its
	// check. A check does not keep an entry from idling out: one that
	// expires during its check is removed, and closed after the check.
	//
	// default: nil, no checks.
	HealthCheck func(ctx context.Context, key K, v V) error

	// HealthCheckInterval is how often idle entries are checked.
	//
	// default: 0, meaning 30s when HealthCheck is set.
	HealthCheckInterval time.Duration

	// HealthCheckTimeout bounds one health check.
	//
	// default: 0, meaning 5s.
	HealthCheckTimeout time.Duration

	// ClockResolution is the tick of the coarse clock with which the cache
	// records uses and checks expiry without reading the system clock on
	// the hit path. An entry may idle out up to one tick early. It is never
	// served after its deadline while the janitor goroutine keeps to its
	// tick within the larger of 4 ticks and 250ms; see the package doc for
	// the bound under CPU starvation. New rejects a value outside
	// [1ms, 1min].
	//
	// default: 0, meaning 1/64 of the shortest of IdleTimeout, MaxLifetime,
	// ErrorTTL, LeakThreshold and RefreshAfter, within [1ms, 1s], or 10ms
	// for a cache that needs a clock for none of them (MaxEntries or
	// HealthCheck only).
	ClockResolution time.Duration

	// LeakThreshold reports a lease (Lease, Acquire) held longer than this,
	// once, at Warn, with its key (through KeyString), how long it has been
	// held and the stack of the call that took it, and counts it in
	// [Stats.LeaseLeaks]. The stack is captured only when this is set, and
	// each lease then costs an allocation. A lease that becomes unreachable
	// without Release is then also released by the garbage collector
	// (runtime.AddCleanup), so its value can close, and is logged and
	// counted the same way. The checks run on the janitor's tick; the logs
	// are written on the cache's hook goroutine.
	//
	// default: 0, off.
	LeakThreshold time.Duration

	// Logger receives the cache's lifecycle logs: at Debug, builds started
	// and finished, evictions and closes; at Warn, close errors, failed
	// health checks and recovered panics.
	//
	// default: nil, no logging.
	Logger *slog.Logger

	// KeyString formats a key for logs. Use it to redact tenant
	// identifiers.
	//
	// default: nil, meaning fmt.Sprint(key).
	KeyString func(K) string
}

// Defaults applied by [New] where a field is zero.
const (
	defaultHealthCheckInterval = 30 * time.Second
	defaultHealthCheckTimeout  = 5 * time.Second
	defaultMaxErrorEntries     = 1024
	defaultLRUClock            = 10 * time.Millisecond
	minClock                   = time.Millisecond
	maxClock                   = time.Second
	maxExplicitClock           = time.Minute
)

// validate reports the first invalid field of o.
func (o *Options[K, V]) validate() error {
	ints := []struct {
		name string
		v    int
	}{
		{"MaxEntries", o.MaxEntries},
		{"MaxConcurrentBuilds", o.MaxConcurrentBuilds},
		{"MaxErrorEntries", o.MaxErrorEntries},
	}
	for _, f := range ints {
		if f.v < 0 {
			return fmt.Errorf("rescache: Options.%s is negative (%d)", f.name, f.v)
		}
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"IdleTimeout", o.IdleTimeout},
		{"MaxLifetime", o.MaxLifetime},
		{"BuildTimeout", o.BuildTimeout},
		{"ErrorTTL", o.ErrorTTL},
		{"HealthCheckInterval", o.HealthCheckInterval},
		{"HealthCheckTimeout", o.HealthCheckTimeout},
		{"ClockResolution", o.ClockResolution},
		{"LeakThreshold", o.LeakThreshold},
		{"RefreshAfter", o.RefreshAfter},
		{"LifetimeJitter", o.LifetimeJitter},
	}
	for _, f := range durations {
		if f.v < 0 {
			return fmt.Errorf("rescache: Options.%s is negative (%v)", f.name, f.v)
		}
	}
	if o.Policy != LRU && o.Policy != TinyLFU {
		return fmt.Errorf("rescache: Options.Policy %v is not LRU or TinyLFU", o.Policy)
	}
	if o.RefreshAfter > 0 && o.MaxLifetime > 0 && o.RefreshAfter >= o.MaxLifetime {
		return fmt.Errorf("rescache: Options.RefreshAfter (%v) is not below MaxLifetime (%v): the entry would expire before its refresh", o.RefreshAfter, o.MaxLifetime)
	}
	if j := o.LifetimeJitter; j > 0 {
		shorter := o.MaxLifetime
		if o.RefreshAfter > 0 && (shorter == 0 || o.RefreshAfter < shorter) {
			shorter = o.RefreshAfter
		}
		if shorter == 0 {
			return errors.New("rescache: Options.LifetimeJitter is set but neither MaxLifetime nor RefreshAfter is")
		}
		if j >= shorter {
			return fmt.Errorf("rescache: Options.LifetimeJitter (%v) is not below the shorter of MaxLifetime and RefreshAfter (%v)", j, shorter)
		}
	}
	if r := o.ClockResolution; r != 0 && (r < minClock || r > maxExplicitClock) {
		return fmt.Errorf("rescache: Options.ClockResolution %v is outside [%v, %v]", r, minClock, maxExplicitClock)
	}
	if o.HealthCheck == nil && o.HealthCheckInterval > 0 {
		return errors.New("rescache: Options.HealthCheckInterval is set but HealthCheck is nil")
	}
	return nil
}

// withDefaults returns a copy of o with every zero field that has a default
// filled in.
func (o Options[K, V]) withDefaults() Options[K, V] {
	if o.HealthCheck != nil {
		if o.HealthCheckInterval == 0 {
			o.HealthCheckInterval = defaultHealthCheckInterval
		}
		if o.HealthCheckTimeout == 0 {
			o.HealthCheckTimeout = defaultHealthCheckTimeout
		}
	}
	if o.MaxErrorEntries == 0 {
		o.MaxErrorEntries = o.MaxEntries
		if o.MaxErrorEntries == 0 {
			o.MaxErrorEntries = defaultMaxErrorEntries
		}
	}
	if o.ClockResolution == 0 {
		o.ClockResolution = o.defaultClock()
	}
	if o.KeyString == nil {
		o.KeyString = func(k K) string { return fmt.Sprint(k) }
	}
	return o
}

// defaultClock is the clock tick for o, or 0 when the cache needs no clock.
func (o *Options[K, V]) defaultClock() time.Duration {
	shortest := time.Duration(0)
	for _, d := range []time.Duration{o.IdleTimeout, o.MaxLifetime, o.ErrorTTL, o.LeakThreshold, o.RefreshAfter} {
		if d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	switch {
	case shortest > 0:
		return min(max(shortest/64, minClock), maxClock)
	case o.MaxEntries > 0 || o.HealthCheck != nil:
		return defaultLRUClock
	default:
		return 0
	}
}
