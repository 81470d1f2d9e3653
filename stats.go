package rescache

import (
	"sync/atomic"
	"time"
)

// EvictReason says why an entry left the cache.
type EvictReason int

const (
	// EvictCapacity: the cache was full (MaxEntries) and the policy chose
	// the entry: the least recently used under LRU; under TinyLFU the
	// loser of its admission (the window's candidate or probation's
	// victim; a value just built is always cached).
	EvictCapacity EvictReason = iota + 1
	// EvictIdle: the entry was not used for IdleTimeout.
	EvictIdle
	// EvictLifetime: the entry was built MaxLifetime ago.
	EvictLifetime
	// EvictInvalidated: [Cache.Invalidate] removed it.
	EvictInvalidated
	// EvictClosed: the cache was closed.
	EvictClosed
	// EvictUnhealthy: its HealthCheck failed.
	EvictUnhealthy
	// EvictDiscarded: the entry left through [Lease.Discard].
	EvictDiscarded
	// EvictReplaced: a refresh replaced the entry's value ([Cache.Refresh],
	// Options.RefreshAfter).
	EvictReplaced

	numEvictReasons = int(EvictReplaced) + 1
)

// EvictReasons lists every EvictReason, in order.
func EvictReasons() []EvictReason {
	return []EvictReason{EvictCapacity, EvictIdle, EvictLifetime, EvictInvalidated, EvictClosed, EvictUnhealthy, EvictDiscarded, EvictReplaced}
}

// String returns the lower-case name of r, as used in logs and metric labels.
func (r EvictReason) String() string {
	switch r {
	case EvictCapacity:
		return "capacity"
	case EvictIdle:
		return "idle"
	case EvictLifetime:
		return "lifetime"
	case EvictInvalidated:
		return "invalidated"
	case EvictClosed:
		return "closed"
	case EvictUnhealthy:
		return "unhealthy"
	case EvictDiscarded:
		return "discarded"
	case EvictReplaced:
		return "replaced"
	default:
		return "unknown"
	}
}

// Stats is a snapshot of a cache's counters ([Cache.Stats]). Counters only
// grow; gauges (Entries, Pending, Leased) are the state at the snapshot.
// The fields are read one at a time while the cache keeps working, so under
// load two fields may be a few events apart.
type Stats struct {
	// Hits counts calls of Get, Lease and Acquire served by a found entry
	// without waiting for a build.
	Hits uint64
	// Misses counts calls of Get, Lease and Acquire that waited for a
	// build, started or joined, and calls of Refresh that built an absent
	// key. A call counts once, in Hits, Misses or ErrorHits, however often
	// it looks again (a Get whose build Invalidate detached waits for the
	// next one and is still one miss).
	Misses uint64
	// ErrorHits counts calls answered with a remembered build error
	// (Options.ErrorTTL).
	ErrorHits uint64
	// Builds counts calls of the build function.
	Builds uint64
	// BuildErrors counts builds that returned an error (including their
	// context's error after BuildTimeout or Close), panicked or called
	// runtime.Goexit. Once every
	// build has returned, Builds - BuildErrors builds succeeded; a build
	// that returns a value after its BuildTimeout counts as a success, and
	// its value is closed at once.
	BuildErrors uint64
	// BuildPanics counts the builds among BuildErrors that panicked.
	BuildPanics uint64
	// BuildTime is the total time spent in finished builds; BuildTime
	// divided by Builds is the mean build latency.
	BuildTime time.Duration
	// Evictions counts found entries that left the cache, for any reason.
	Evictions uint64
	// EvictionsByReason splits Evictions by reason.
	EvictionsByReason map[EvictReason]uint64
	// Closes counts values closed (the Closer hook was called), whether or
	// not it returned an error.
	Closes uint64
	// CloseErrors counts Closer calls that returned an error or panicked.
	CloseErrors uint64
	// HealthChecks counts health checks run; HealthCheckErrors those that
	// failed.
	HealthChecks, HealthCheckErrors uint64

	// Entries is the number of found entries (the same as [Cache.Len]).
	Entries int
	// Pending is the number of builds started whose build function has
	// not returned: waiting for room (MaxEntries) or a slot
	// (MaxConcurrentBuilds), or running. A
	// build whose waiters were answered by BuildTimeout or Close counts
	// until its function returns, since it still holds its slot.
	Pending int
	// Building is the number of build functions running (the part of
	// Pending past the wait for a slot), however they end (return, panic
	// or runtime.Goexit), including those that lent their slot while they
	// wait for a nested build.
	Building int
	// Refreshes counts refreshes finished ([Cache.Refresh] and
	// RefreshAfter), whatever their outcome, when the outcome is known: the
	// build returned, or BuildTimeout or Close ended it first (a refresh
	// that timed out counts then, not when its function returns);
	// RefreshErrors those that failed (the old value stayed). Their builds are also counted in
	// Builds.
	Refreshes, RefreshErrors uint64

	// LeaseLeaks counts leases reported by Options.LeakThreshold (held
	// past it), or dropped unreleased and released by the garbage
	// collector; a lease counts once.
	LeaseLeaks uint64

	// Leased is the number of leases (Lease, Acquire) not yet released. It is
	// summed from per-processor counts without stopping the callers: never
	// negative, and when leases move it lies between the counts at two
	// instants of the snapshot.
	Leased int
}

// counters holds the cache's slow-path counters. Each field is updated with
// one atomic operation where the event happens; hits and leases are counted
// by the per-P counter in Cache.hot instead, because they are on the hit
// path.
type counters struct {
	misses, errorHits                atomic.Uint64
	builds, buildErrors, buildPanics atomic.Uint64
	buildNanos                       atomic.Int64
	evictions                        [numEvictReasons]atomic.Uint64
	closes, closeErrors              atomic.Uint64
	healthChecks, healthCheckErrors  atomic.Uint64
	leaseLeaks                       atomic.Uint64
	refreshes, refreshErrors         atomic.Uint64
	entries, pending, building       atomic.Int64
	liveValues                       atomic.Int64 // built values not yet closed
	_                                [0]func()    // not comparable
}

func (c *counters) snapshot(hits uint64) Stats {
	s := Stats{
		Hits:              hits,
		Misses:            c.misses.Load(),
		ErrorHits:         c.errorHits.Load(),
		Builds:            c.builds.Load(),
		BuildErrors:       c.buildErrors.Load(),
		BuildPanics:       c.buildPanics.Load(),
		BuildTime:         time.Duration(c.buildNanos.Load()),
		EvictionsByReason: make(map[EvictReason]uint64, numEvictReasons-1),
		Closes:            c.closes.Load(),
		CloseErrors:       c.closeErrors.Load(),
		HealthChecks:      c.healthChecks.Load(),
		HealthCheckErrors: c.healthCheckErrors.Load(),
		LeaseLeaks:        c.leaseLeaks.Load(),
		Refreshes:         c.refreshes.Load(),
		RefreshErrors:     c.refreshErrors.Load(),
		Entries:           int(c.entries.Load()),
		Pending:           int(c.pending.Load()),
		Building:          int(c.building.Load()),
	}
	for _, r := range EvictReasons() {
		n := c.evictions[r].Load()
		s.EvictionsByReason[r] = n
		s.Evictions += n
	}
	return s
}
