// Package contender puts every way of getting a per-key resource that the
// benchmarks compare behind one small interface: the strategies of the seed
// (a map behind a lock held across connect, double-checked locking, a
// found/pending map with channels), one adapter per peer library, and
// rescache itself.
//
// The Go benchmarks of package bench and the seedtable command use exactly
// this code, so a figure in one can be traced to the other.
package contender

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Resource is the value every contender hands out: a stand-in for a *sql.DB
// that knows whether it has been closed. Its zero value is usable; a
// Resource made by a [Builder] reports its closes to the Builder's [Counts].
type Resource struct {
	// Key is the key the Resource was built for.
	Key string

	closed atomic.Bool
	counts *Counts  // nil for a Resource not made by a Builder
	pool   *simPool // the burst's connection pool; nil elsewhere
}

// errClosedTwice is returned by a second Close of the same Resource.
var errClosedTwice = errors.New("contender: resource closed twice")

// Close marks r closed. The first call counts one close and closes r's
// connection pool, if it has one; later calls count a double close and
// return an error.
func (r *Resource) Close() error {
	if r.closed.Swap(true) {
		if r.counts != nil {
			r.counts.DoubleCloses.Add(1)
		}
		return errClosedTwice
	}
	if r.counts != nil {
		r.counts.Closes.Add(1)
	}
	if r.pool != nil {
		r.pool.close()
	}
	return nil
}

// Closed reports whether r has been closed.
func (r *Resource) Closed() bool { return r.closed.Load() }

// Counts are the counters a [Builder] keeps for the resources it made.
type Counts struct {
	// Builds counts calls of Build (connects, in the seed's words).
	Builds atomic.Int64
	// Closes counts resources closed once.
	Closes atomic.Int64
	// DoubleCloses counts Close calls on a resource already closed.
	DoubleCloses atomic.Int64
}

// BuildFunc makes the resource of key. It is the build function handed to
// every contender.
type BuildFunc func(ctx context.Context, key string) (*Resource, error)

// Builder makes Resources, counting them, after a delay that depends only on
// the key. The zero Builder builds at once. A Builder is safe for concurrent
// use; do not change Delay once Build may be running.
type Builder struct {
	// Delay is how long the build of key takes (a connect to the tenant's
	// database). nil means no delay.
	Delay func(key string) time.Duration

	// Counts are the Builder's counters.
	Counts Counts
}

// Build counts one build, waits for b.Delay(key) (or until ctx ends) and
// returns a new Resource for key.
func (b *Builder) Build(ctx context.Context, key string) (*Resource, error) {
	b.Counts.Builds.Add(1)
	if b.Delay != nil {
		if d := b.Delay(key); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
	}
	return &Resource{Key: key, counts: &b.Counts}, nil
}

// Cache is the common face of every contender: a map from key to Resource
// that builds a missing value with the contender's BuildFunc.
type Cache interface {
	// Get returns the resource of key, building it when absent. The caller
	// calls release once it has finished using the value; for every
	// contender but a leasing one (rescache's Acquire) release does nothing
	// and the value may be closed by an eviction while it is in use.
	Get(ctx context.Context, key string) (v *Resource, release func(), err error)

	// Close empties the cache, closing the values its eviction hook closes,
	// and stops the goroutines it can stop.
	Close()
}

// Config is what the benchmarks ask of a contender. A contender that has no
// such setting ignores it (the Description of each one says which).
type Config struct {
	// MaxEntries bounds the number of cached values; 0 means unbounded.
	MaxEntries int
	// IdleTimeout evicts a value unused this long; 0 means never.
	IdleTimeout time.Duration
}

// Contender is one row of the benchmark tables.
type Contender struct {
	// Name is the row's name in Go benchmark output: short, no spaces.
	Name string
	// Title is the row's name in the seed table.
	Title string
	// Description says in one line how the contender gets a value and
	// which parts of Config it honours.
	Description string
	// New returns an empty cache that builds with build.
	New func(build BuildFunc, cfg Config) Cache
	// Bounded reports whether the contender honours Config.MaxEntries.
	Bounded bool
	// Leases reports whether release keeps the value from being closed
	// until it is called.
	Leases bool
	// OneBuildPerKey reports whether concurrent callers of an absent key
	// share one build. Those without it may build a key more than once.
	OneBuildPerKey bool
}

// noRelease is the release of every contender without leases. It is a
// package-level value so that handing it out allocates nothing.
var noRelease = func() {}

// unboundedSize stands for "no bound" for the peers whose LRU needs a
// positive size.
const unboundedSize = 1 << 30

// sizeOrUnbounded returns n, or unboundedSize when n is 0.
func sizeOrUnbounded(n int) int {
	if n == 0 {
		return unboundedSize
	}
	return n
}

// Timed lists, in the seed table's order, every contender that the seed
// table times and that the race test runs. Naive is not in it: it races.
// Floor is not in it either: it is a baseline for the hit path, not a
// strategy anyone would ship.
var Timed = []Contender{
	Lock, DoubleCheck, Channels,
	Singleflight, Otter, LRU, Expirable, TTLCache, LazyCache,
	Rescache, RescacheAcquire,
}
