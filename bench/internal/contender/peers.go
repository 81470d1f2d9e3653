package contender

import (
	"context"
	"errors"
	"sync"

	"github.com/bep/lazycache"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/jellydator/ttlcache/v3"
	"github.com/maypok86/otter/v2"
	"github.com/puzpuzpuz/xsync/v3"
	"golang.org/x/sync/singleflight"
)

// errNoValue is returned by the ttlcache adapter when its loader found no
// value (ttlcache's loader reports a failed build as a nil item).
var errNoValue = errors.New("contender: build failed")

// closeValue is the eviction hook of every peer: it closes the value that
// left the cache. Resource.Close fails only on a second close, which it
// counts in Counts.DoubleCloses, where the benchmarks read it; there is
// nothing else to do with the error.
func closeValue(_ string, v *Resource) {
	if v != nil {
		_ = v.Close()
	}
}

// Floor is a plain xsync.MapOf whose hit path is one Load: the floor of the
// hit-path benchmarks. A miss builds through a singleflight.Group and
// stores the value; it exists so that Floor can be warmed like the others.
var Floor = Contender{
	Name:           "xsync-floor",
	Title:          "xsync.MapOf.Load (floor)",
	Description:    "xsync.MapOf.Load; a miss builds once through singleflight; unbounded",
	OneBuildPerKey: true,
	New: func(build BuildFunc, _ Config) Cache {
		return &xsyncMap{build: build, m: xsync.NewMapOf[string, *Resource]()}
	},
}

// xsyncMap is the Floor contender.
type xsyncMap struct {
	build BuildFunc
	m     *xsync.MapOf[string, *Resource]
	g     singleflight.Group
}

// Get repeats singleflightMap.Get on purpose: a helper shared by the two
// would put an interface call (the map) on the hit path they measure.
func (s *xsyncMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	if v, ok := s.m.Load(key); ok {
		return v, noRelease, nil
	}
	r, err, _ := s.g.Do(key, func() (any, error) {
		if v, ok := s.m.Load(key); ok {
			return v, nil
		}
		v, err := s.build(ctx, key)
		if err != nil {
			return nil, err
		}
		s.m.Store(key, v)
		return v, nil
	})
	if err != nil {
		return nil, noRelease, err
	}
	return r.(*Resource), noRelease, nil
}

func (s *xsyncMap) Close() {}

// Singleflight is golang.org/x/sync/singleflight over a sync.Map: a hit is
// one sync.Map.Load (the "sync.Map" row of the hit-path benchmarks); a miss
// joins the key's flight, which re-checks the map, builds and stores.
var Singleflight = Contender{
	Name:           "singleflight-syncmap",
	Title:          "singleflight + sync.Map",
	Description:    "sync.Map.Load; a miss builds once through singleflight.Group.Do; unbounded",
	OneBuildPerKey: true,
	New: func(build BuildFunc, _ Config) Cache {
		return &singleflightMap{build: build}
	},
}

// singleflightMap is the Singleflight contender.
type singleflightMap struct {
	build BuildFunc
	m     sync.Map // string -> *Resource
	g     singleflight.Group
}

func (s *singleflightMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	if v, ok := s.m.Load(key); ok {
		return v.(*Resource), noRelease, nil
	}
	r, err, _ := s.g.Do(key, func() (any, error) {
		if v, ok := s.m.Load(key); ok {
			return v, nil
		}
		v, err := s.build(ctx, key)
		if err != nil {
			return nil, err
		}
		s.m.Store(key, v)
		return v, nil
	})
	if err != nil {
		return nil, noRelease, err
	}
	return r.(*Resource), noRelease, nil
}

func (s *singleflightMap) Close() {}

// Otter is github.com/maypok86/otter/v2 used through Cache.Get with a
// loader, which builds each absent key once. MaxEntries maps to
// MaximumSize, IdleTimeout to ExpiryAccessing; OnDeletion closes the value.
var Otter = Contender{
	Name:           "otter",
	Title:          "otter v2 (Get with loader)",
	Description:    "otter.Cache.Get with a Loader; MaximumSize, ExpiryAccessing; OnDeletion closes",
	OneBuildPerKey: true,
	Bounded:        true,
	New: func(build BuildFunc, cfg Config) Cache {
		o := &otter.Options[string, *Resource]{
			MaximumSize: cfg.MaxEntries,
			OnDeletion: func(e otter.DeletionEvent[string, *Resource]) {
				closeValue(e.Key, e.Value)
			},
		}
		if cfg.IdleTimeout > 0 {
			o.ExpiryCalculator = otter.ExpiryAccessing[string, *Resource](cfg.IdleTimeout)
		}
		return &otterCache{c: otter.Must(o), loader: otter.LoaderFunc[string, *Resource](build)}
	},
}

// otterCache is the Otter contender.
type otterCache struct {
	c      *otter.Cache[string, *Resource]
	loader otter.Loader[string, *Resource]
}

func (s *otterCache) Get(ctx context.Context, key string) (*Resource, func(), error) {
	v, err := s.c.Get(ctx, key, s.loader)
	return v, noRelease, err
}

func (s *otterCache) Close() {
	s.c.InvalidateAll()
	s.c.StopAllGoroutines()
}

// LRU is github.com/hashicorp/golang-lru/v2's Cache. It has no loader: the
// adapter builds on a miss and keeps the first value added (PeekOrAdd),
// closing its own if another caller's won; so one key may be built more
// than once while callers race. The eviction callback closes the value.
// IdleTimeout is ignored.
var LRU = Contender{
	Name:        "golang-lru",
	Title:       "golang-lru v2 (Get, build, PeekOrAdd)",
	Description: "lru.Cache.Get; a miss builds, then PeekOrAdd keeps the first value; size bound only",
	Bounded:     true,
	New: func(build BuildFunc, cfg Config) Cache {
		c, err := lru.NewWithEvict(sizeOrUnbounded(cfg.MaxEntries), closeValue)
		if err != nil {
			panic(err)
		}
		return &lruCache{build: build, c: c}
	},
}

// lruCache is the LRU contender.
type lruCache struct {
	build BuildFunc
	c     *lru.Cache[string, *Resource]
}

func (s *lruCache) Get(ctx context.Context, key string) (*Resource, func(), error) {
	if v, ok := s.c.Get(key); ok {
		return v, noRelease, nil
	}
	v, err := s.build(ctx, key)
	if err != nil {
		return nil, noRelease, err
	}
	if prev, found, _ := s.c.PeekOrAdd(key, v); found {
		_ = v.Close() // never fails: v was never shared
		return prev, noRelease, nil
	}
	return v, noRelease, nil
}

func (s *lruCache) Close() { s.c.Purge() }

// Expirable is golang-lru's expirable.LRU. Its TTL counts from the Add, not
// from the last use, and it has no add-if-absent: the adapter builds on a
// miss, re-checks with Peek and then Adds, so callers that race may build
// the same key twice, and a value replaced by a racing Add is never closed
// by the library. The eviction callback closes the value. Its expiry
// goroutine cannot be stopped (golang-lru v2.0.7), so every instance leaves
// one goroutine behind.
var Expirable = Contender{
	Name:        "lru-expirable",
	Title:       "golang-lru expirable (Get, build, Add)",
	Description: "expirable.LRU.Get; a miss builds, re-checks with Peek, then Adds; TTL counts from the Add",
	Bounded:     true,
	New: func(build BuildFunc, cfg Config) Cache {
		return &expirableCache{
			build: build,
			c:     expirable.NewLRU(cfg.MaxEntries, closeValue, cfg.IdleTimeout),
		}
	},
}

// expirableCache is the Expirable contender.
type expirableCache struct {
	build BuildFunc
	c     *expirable.LRU[string, *Resource]
}

func (s *expirableCache) Get(ctx context.Context, key string) (*Resource, func(), error) {
	if v, ok := s.c.Get(key); ok {
		return v, noRelease, nil
	}
	v, err := s.build(ctx, key)
	if err != nil {
		return nil, noRelease, err
	}
	if prev, ok := s.c.Peek(key); ok {
		_ = v.Close() // never fails: v was never shared
		return prev, noRelease, nil
	}
	s.c.Add(key, v)
	return v, noRelease, nil
}

func (s *expirableCache) Close() { s.c.Purge() }

// TTLCache is github.com/jellydator/ttlcache/v3 with a SuppressedLoader
// (singleflight keyed by fmt.Sprint(key)): concurrent callers share one
// build per flight, but a caller that missed just before a flight stored
// its value and calls the loader just after the flight ended starts a new
// build (the loader does not re-check the cache), so under a stampede a key
// can be built more than once. MaxEntries maps to WithCapacity, IdleTimeout to WithTTL (a hit
// extends it); an OnEviction subscriber closes the value (ttlcache runs it
// on a new goroutine). The cleanup goroutine is not started: expired
// entries are skipped by Get, never removed in the background.
var TTLCache = Contender{
	Name:        "ttlcache",
	Title:       "ttlcache v3 (SuppressedLoader)",
	Description: "ttlcache.Cache.Get with a SuppressedLoader; WithCapacity, WithTTL; OnEviction closes",
	Bounded:     true,
	New: func(build BuildFunc, cfg Config) Cache {
		load := ttlcache.LoaderFunc[string, *Resource](
			func(c *ttlcache.Cache[string, *Resource], key string) *ttlcache.Item[string, *Resource] {
				v, err := build(context.Background(), key)
				if err != nil {
					return nil
				}
				return c.Set(key, v, ttlcache.DefaultTTL)
			})
		c := ttlcache.New(
			ttlcache.WithCapacity[string, *Resource](uint64(cfg.MaxEntries)),
			ttlcache.WithTTL[string, *Resource](cfg.IdleTimeout),
			ttlcache.WithLoader[string, *Resource](ttlcache.NewSuppressedLoader(load, nil)),
		)
		c.OnEviction(func(_ context.Context, _ ttlcache.EvictionReason, it *ttlcache.Item[string, *Resource]) {
			closeValue(it.Key(), it.Value())
		})
		return &ttlCache{c: c}
	},
}

// ttlCache is the TTLCache contender.
type ttlCache struct {
	c *ttlcache.Cache[string, *Resource]
}

func (s *ttlCache) Get(_ context.Context, key string) (*Resource, func(), error) {
	it := s.c.Get(key)
	if it == nil {
		return nil, noRelease, errNoValue
	}
	return it.Value(), noRelease, nil
}

func (s *ttlCache) Close() { s.c.DeleteAll() }

// LazyCache is github.com/bep/lazycache: GetOrCreate builds each absent key
// once, with the cache's lock released. MaxEntries maps to MaxEntries;
// OnEvict closes the value. IdleTimeout is ignored. The build gets a
// background context (GetOrCreate's create function takes none).
var LazyCache = Contender{
	Name:           "lazycache",
	Title:          "lazycache (GetOrCreate)",
	Description:    "lazycache.Cache.GetOrCreate; size bound only; OnEvict closes",
	OneBuildPerKey: true,
	Bounded:        true,
	New: func(build BuildFunc, cfg Config) Cache {
		c := lazycache.New(lazycache.Options[string, *Resource]{
			MaxEntries: sizeOrUnbounded(cfg.MaxEntries),
			OnEvict:    closeValue,
		})
		return &lazyCache{
			c:      c,
			create: func(key string) (*Resource, error) { return build(context.Background(), key) },
		}
	},
}

// lazyCache is the LazyCache contender. create is made once so that a hit
// does not allocate a closure.
type lazyCache struct {
	c      *lazycache.Cache[string, *Resource]
	create func(key string) (*Resource, error)
}

func (s *lazyCache) Get(_ context.Context, key string) (*Resource, func(), error) {
	v, _, err := s.c.GetOrCreate(key, s.create)
	return v, noRelease, err
}

func (s *lazyCache) Close() {
	s.c.DeleteFunc(func(string, *Resource) bool { return true })
}
