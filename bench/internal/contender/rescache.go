package contender

import (
	"context"

	"github.com/rescache/rescache"
)

// Rescache is rescache's Cache used through Get: no lease, so a value may
// be closed by an eviction while in use. MaxEntries and IdleTimeout map to
// the Options of the same names; the default Closer closes the value.
var Rescache = Contender{
	Name:           "rescache-Get",
	Title:          "rescache (Get)",
	Description:    "rescache.Cache.Get; MaxEntries, IdleTimeout; the Closer closes",
	OneBuildPerKey: true,
	Bounded:        true,
	New: func(build BuildFunc, cfg Config) Cache {
		return &rescacheGet{c: newRescache(build, cfg, rescache.LRU)}
	},
}

// RescacheAcquire is rescache's Cache used through Acquire and release: a
// leased value is never closed until its lease is released.
var RescacheAcquire = Contender{
	Name:           "rescache-Acquire",
	Title:          "rescache (Acquire + release)",
	Description:    "rescache.Cache.Acquire, release when done; MaxEntries, IdleTimeout; the Closer closes",
	OneBuildPerKey: true,
	Bounded:        true,
	Leases:         true,
	New: func(build BuildFunc, cfg Config) Cache {
		return &rescacheAcquire{c: newRescache(build, cfg, rescache.LRU)}
	},
}

// RescacheTinyLFU is [Rescache] with Options.Policy TinyLFU.
var RescacheTinyLFU = Contender{
	Name:           "rescache-TinyLFU-Get",
	Title:          "rescache TinyLFU (Get)",
	Description:    "rescache.Cache.Get, Policy TinyLFU; MaxEntries, IdleTimeout; the Closer closes",
	OneBuildPerKey: true,
	Bounded:        true,
	New: func(build BuildFunc, cfg Config) Cache {
		return &rescacheGet{c: newRescache(build, cfg, rescache.TinyLFU)}
	},
}

// RescacheTinyLFUAcquire is [RescacheAcquire] with Options.Policy TinyLFU.
var RescacheTinyLFUAcquire = Contender{
	Name:           "rescache-TinyLFU-Acquire",
	Title:          "rescache TinyLFU (Acquire + release)",
	Description:    "rescache.Cache.Acquire, release when done, Policy TinyLFU; MaxEntries, IdleTimeout; the Closer closes",
	OneBuildPerKey: true,
	Bounded:        true,
	Leases:         true,
	New: func(build BuildFunc, cfg Config) Cache {
		return &rescacheAcquire{c: newRescache(build, cfg, rescache.TinyLFU)}
	},
}

// newRescache returns a rescache.Cache for build, cfg and policy. The
// options are fixed by the benchmarks, so an error is a bug and panics.
func newRescache(build BuildFunc, cfg Config, policy rescache.Policy) *rescache.Cache[string, *Resource] {
	c, err := rescache.New(build, &rescache.Options[string, *Resource]{
		MaxEntries:  cfg.MaxEntries,
		IdleTimeout: cfg.IdleTimeout,
		Policy:      policy,
	})
	if err != nil {
		panic(err)
	}
	return c
}

// rescacheGet is the Rescache contender.
type rescacheGet struct {
	c *rescache.Cache[string, *Resource]
}

func (s *rescacheGet) Get(ctx context.Context, key string) (*Resource, func(), error) {
	v, err := s.c.Get(ctx, key)
	return v, noRelease, err
}

// Close closes the cache. Its error joins the values' Close errors, which
// for a Resource are second closes, already counted in Counts.DoubleCloses.
func (s *rescacheGet) Close() { _ = s.c.Close() }

// rescacheAcquire is the RescacheAcquire contender.
type rescacheAcquire struct {
	c *rescache.Cache[string, *Resource]
}

func (s *rescacheAcquire) Get(ctx context.Context, key string) (*Resource, func(), error) {
	v, release, err := s.c.Acquire(ctx, key)
	if err != nil {
		return nil, noRelease, err
	}
	return v, release, nil
}

// Close closes the cache; see rescacheGet.Close for its error.
func (s *rescacheAcquire) Close() { _ = s.c.Close() }
