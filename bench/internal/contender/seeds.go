package contender

import (
	"context"
	"sync"
)

// The four strategies of the seed, written as it describes them. They keep
// their values forever (Config is ignored) and never close a value they
// overwrite.

// Naive is the seed's first strategy: a plain map read and written with no
// synchronization. It races (concurrent map writes crash the program, and
// the race detector reports it every time), so it is never timed: the
// benchmarks and the seed table leave it out, and TestNaiveMapRaces shows
// the race detector catching it.
var Naive = Contender{
	Name:        "seed-naive",
	Title:       "seed 1: map, no lock",
	Description: "map read and written with no lock; races, so never run",
	New: func(build BuildFunc, _ Config) Cache {
		return &naiveMap{build: build, m: make(map[string]*Resource)}
	},
}

// naiveMap is the seed's naive strategy. It is not safe for concurrent use.
type naiveMap struct {
	build BuildFunc
	m     map[string]*Resource
}

func (s *naiveMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	v := s.m[key]
	if v == nil {
		var err error
		if v, err = s.build(ctx, key); err != nil {
			return nil, noRelease, err
		}
		s.m[key] = v
	}
	return v, noRelease, nil
}

func (s *naiveMap) Close() {}

// Lock is the seed's second strategy: a map behind an RWMutex whose write
// lock is held across the connect. Builds are serialized, and a caller that
// saw the key missing builds again after the one before it stored its value
// (time-of-check to time-of-use), so the same key is built many times.
var Lock = Contender{
	Name:        "seed-lock",
	Title:       "seed 2: lock held across connect",
	Description: "RWMutex map; the write lock is held while building, with no re-check",
	New: func(build BuildFunc, _ Config) Cache {
		return &lockMap{build: build, m: make(map[string]*Resource)}
	},
}

// lockMap is the seed's lock strategy.
type lockMap struct {
	build BuildFunc
	mu    sync.RWMutex // protects m; held across build by writers
	m     map[string]*Resource
}

func (s *lockMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	s.mu.RLock()
	v := s.m[key]
	s.mu.RUnlock()
	if v != nil {
		return v, noRelease, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.build(ctx, key)
	if err != nil {
		return nil, noRelease, err
	}
	s.m[key] = v
	return v, noRelease, nil
}

func (s *lockMap) Close() {}

// DoubleCheck is the seed's third strategy: double-checked locking. Each key
// is built once, but the write lock is still held across the connect, so
// the builds of different keys run one after another.
var DoubleCheck = Contender{
	Name:           "seed-doublecheck",
	Title:          "seed 3: double-checked locking",
	Description:    "RWMutex map; re-checks under the write lock, which is held while building",
	OneBuildPerKey: true,
	New: func(build BuildFunc, _ Config) Cache {
		return &doubleCheckMap{build: build, m: make(map[string]*Resource)}
	},
}

// doubleCheckMap is the seed's double-checked locking strategy.
type doubleCheckMap struct {
	build BuildFunc
	mu    sync.RWMutex // protects m; held across build by writers
	m     map[string]*Resource
}

func (s *doubleCheckMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	s.mu.RLock()
	v := s.m[key]
	s.mu.RUnlock()
	if v != nil {
		return v, noRelease, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.m[key]; v != nil {
		return v, noRelease, nil
	}
	v, err := s.build(ctx, key)
	if err != nil {
		return nil, noRelease, err
	}
	s.m[key] = v
	return v, noRelease, nil
}

func (s *doubleCheckMap) Close() {}

// Channels is the seed's fourth strategy: a key is found, absent or pending.
// The first caller of an absent key marks it pending with a channel and
// builds with no lock held; later callers wait for the channel to close.
// Its hit path is a read-locked map lookup, the "RWMutex map" row of the
// hit-path benchmarks.
var Channels = Contender{
	Name:           "seed-channels",
	Title:          "seed 4: found/pending map with channels",
	Description:    "RWMutex map of found values and a map of pending builds, each with a channel closed when it ends",
	OneBuildPerKey: true,
	New: func(build BuildFunc, _ Config) Cache {
		return &channelMap{
			build:   build,
			found:   make(map[string]*Resource),
			pending: make(map[string]*pendingBuild),
		}
	},
}

// pendingBuild is a build in flight. v and err are written once before done
// is closed and read only after.
type pendingBuild struct {
	done chan struct{}
	v    *Resource
	err  error
}

// channelMap is the seed's channels strategy.
type channelMap struct {
	build   BuildFunc
	mu      sync.RWMutex // protects found and pending; never held across build
	found   map[string]*Resource
	pending map[string]*pendingBuild
}

func (s *channelMap) Get(ctx context.Context, key string) (*Resource, func(), error) {
	s.mu.RLock()
	v := s.found[key]
	s.mu.RUnlock()
	if v != nil {
		return v, noRelease, nil
	}
	return s.getSlow(ctx, key)
}

func (s *channelMap) getSlow(ctx context.Context, key string) (*Resource, func(), error) {
	s.mu.Lock()
	if v := s.found[key]; v != nil {
		s.mu.Unlock()
		return v, noRelease, nil
	}
	if p := s.pending[key]; p != nil {
		s.mu.Unlock()
		select {
		case <-p.done:
			return p.v, noRelease, p.err
		case <-ctx.Done():
			return nil, noRelease, ctx.Err()
		}
	}
	p := &pendingBuild{done: make(chan struct{})}
	s.pending[key] = p
	s.mu.Unlock()

	p.v, p.err = s.build(ctx, key)

	s.mu.Lock()
	delete(s.pending, key)
	if p.err == nil {
		s.found[key] = p.v
	}
	s.mu.Unlock()
	close(p.done)
	return p.v, noRelease, p.err
}

func (s *channelMap) Close() {}
