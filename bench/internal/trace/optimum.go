package trace

import (
	"container/heap"
	"math"
)

// Optimum returns the hits of Bélády's offline optimum on keys with room
// for size entries: on a miss with the cache full, it drops the key whose
// next use is farthest in the future, which may be the key just missed
// (then it is not cached at all). No policy that sees only the past, and
// that must cache every key it misses, can hit more often, so it is an
// upper bound for every other row.
//
// It runs in O(n log n) time for n accesses: the next use of every access
// is computed backwards first, and the cached keys sit in a max-heap by
// next use, with stale heap slots (a key used again since it was pushed)
// skipped when they reach the top.
func Optimum(keys []uint64, size int) (hits int) {
	if size <= 0 {
		return 0
	}
	ids, distinct := dense(keys)
	const never = math.MaxInt32
	next := make([]int32, len(ids))
	last := make([]int32, distinct)
	for i := range last {
		last[i] = never
	}
	for i := len(ids) - 1; i >= 0; i-- {
		next[i] = last[ids[i]]
		last[ids[i]] = int32(i)
	}
	// nextUse[id] is the next use of a cached key, -1 when not cached.
	nextUse := make([]int32, distinct)
	for i := range nextUse {
		nextUse[i] = -1
	}
	h := &farthest{}
	cached := 0
	for i, id := range ids {
		n := next[i]
		if nextUse[id] >= 0 {
			hits++
			nextUse[id] = n
			heap.Push(h, slot{n, id})
			continue
		}
		if cached == size {
			// The cached key whose next use is farthest, skipping stale slots.
			for {
				top := (*h)[0]
				if nextUse[top.id] == top.next {
					break
				}
				heap.Pop(h)
			}
			top := (*h)[0]
			if top.next <= n {
				// The missed key is used again no sooner than every
				// cached one: keeping it out is at least as good.
				continue
			}
			heap.Pop(h)
			nextUse[top.id] = -1
			cached--
		}
		nextUse[id] = n
		heap.Push(h, slot{n, id})
		cached++
	}
	return hits
}

// dense maps keys to ids 0..distinct-1 in order of first use.
func dense(keys []uint64) (ids []int32, distinct int) {
	m := make(map[uint64]int32)
	ids = make([]int32, len(keys))
	for i, k := range keys {
		id, ok := m[k]
		if !ok {
			id = int32(len(m))
			m[k] = id
		}
		ids[i] = id
	}
	return ids, len(m)
}

type slot struct {
	next int32 // the access index of the key's next use; MaxInt32 for never
	id   int32
}

// farthest is a max-heap of slots by next use.
type farthest []slot

func (h farthest) Len() int           { return len(h) }
func (h farthest) Less(i, j int) bool { return h[i].next > h[j].next }
func (h farthest) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *farthest) Push(x any)        { *h = append(*h, x.(slot)) }
func (h *farthest) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}
