package trace

import (
	"context"
	"fmt"

	"github.com/hashicorp/golang-lru/arc/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/maypok86/otter/v2"
	"github.com/rescache/rescache"
)

// Policy is one column of a replay: Replay returns the hits of keys
// replayed, on one goroutine, through a cache bounded at size entries that
// builds (caches) every key it misses.
type Policy struct {
	Name   string
	Replay func(keys []uint64, size int) (hits int, err error)
}

// Policies are the columns of a replay, the optimum last.
var Policies = []Policy{
	{"rescache LRU", func(keys []uint64, size int) (int, error) { return replayRescache(keys, size, rescache.LRU) }},
	{"rescache TinyLFU", func(keys []uint64, size int) (int, error) { return replayRescache(keys, size, rescache.TinyLFU) }},
	{"otter v2", replayOtter},
	{"golang-lru LRU", replayLRU},
	{"golang-lru ARC", replayARC},
	{OptimumName, func(keys []uint64, size int) (int, error) { return Optimum(keys, size), nil }},
}

// OptimumName is the name of the optimum's column.
const OptimumName = "optimum"

// replayRescache replays keys through a rescache.Cache with MaxEntries size
// and policy, through Get; the build counts the misses.
func replayRescache(keys []uint64, size int, policy rescache.Policy) (int, error) {
	builds := 0
	c, err := rescache.New(func(_ context.Context, k uint64) (uint64, error) {
		builds++ // one goroutine: the build runs on Get's caller
		return k, nil
	}, &rescache.Options[uint64, uint64]{MaxEntries: size, Policy: policy})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx := context.Background()
	for _, k := range keys {
		v, err := c.Get(ctx, k)
		if err != nil || v != k {
			return 0, fmt.Errorf("rescache Get(%d) = %d, %v", k, v, err)
		}
	}
	if n := c.Len(); n > size {
		return 0, fmt.Errorf("rescache holds %d entries, over its bound %d", n, size)
	}
	return len(keys) - builds, nil
}

// replayOtter replays keys through otter v2's Get with a loader, with an
// executor that runs its maintenance on the calling goroutine: with the
// default one (a goroutine per task), eviction falls behind a
// single-goroutine replay and the cache holds more than its bound.
func replayOtter(keys []uint64, size int) (int, error) {
	c := otter.Must(&otter.Options[uint64, uint64]{
		MaximumSize: size,
		Executor:    func(fn func()) { fn() },
	})
	defer c.StopAllGoroutines()
	builds := 0
	loader := otter.LoaderFunc[uint64, uint64](func(_ context.Context, k uint64) (uint64, error) {
		builds++
		return k, nil
	})
	ctx := context.Background()
	for _, k := range keys {
		v, err := c.Get(ctx, k, loader)
		if err != nil || v != k {
			return 0, fmt.Errorf("otter Get(%d) = %d, %v", k, v, err)
		}
	}
	c.CleanUp()
	if n := c.EstimatedSize(); n > size {
		return 0, fmt.Errorf("otter holds %d entries, over its bound %d", n, size)
	}
	return len(keys) - builds, nil
}

// replayLRU replays keys through golang-lru's simplelru (its Cache without
// the lock, which one goroutine does not need).
func replayLRU(keys []uint64, size int) (int, error) {
	c, err := simplelru.NewLRU[uint64, struct{}](size, nil)
	if err != nil {
		return 0, err
	}
	hits := 0
	for _, k := range keys {
		if _, ok := c.Get(k); ok {
			hits++
			continue
		}
		c.Add(k, struct{}{})
	}
	return hits, nil
}

// replayARC replays keys through golang-lru's ARC.
func replayARC(keys []uint64, size int) (int, error) {
	c, err := arc.NewARC[uint64, struct{}](size)
	if err != nil {
		return 0, err
	}
	hits := 0
	for _, k := range keys {
		if _, ok := c.Get(k); ok {
			hits++
			continue
		}
		c.Add(k, struct{}{})
	}
	return hits, nil
}
