package rescache

import (
	"bufio"
	"compress/gzip"
	"container/list"
	"hash/maphash"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

type simNode struct {
	key uint64
	seg int
}

// A reference W-TinyLFU with exact LRU lists, fixed 1% window, our sketch.
func simWTinyLFU(keys []uint64, size int, hash func(uint64) uint32) int {
	window := max(1, size-int(0.99*float64(size)))
	protMax := int(0.8 * float64(size-window))
	sk := newSketch(size)
	lists := [3]*list.List{list.New(), list.New(), list.New()}
	idx := map[uint64]*list.Element{}
	rng := rand.New(rand.NewPCG(1, 2))
	hits := 0
	total := func() int { return lists[0].Len() + lists[1].Len() + lists[2].Len() }
	for _, k := range keys {
		h := hash(k)
		sk.increment(h)
		if el, ok := idx[k]; ok {
			hits++
			n := el.Value.(*simNode)
			switch n.seg {
			case 0, 2:
				lists[n.seg].MoveToBack(el)
			case 1:
				lists[1].Remove(el)
				n.seg = 2
				idx[k] = lists[2].PushBack(n)
				for lists[2].Len() > protMax {
					f := lists[2].Front()
					d := lists[2].Remove(f).(*simNode)
					d.seg = 1
					idx[d.key] = lists[1].PushBack(d)
				}
			}
			continue
		}
		n := &simNode{key: k, seg: 0}
		idx[k] = lists[0].PushBack(n)
		var cand *list.Element
		for lists[0].Len() > window {
			f := lists[0].Front()
			d := lists[0].Remove(f).(*simNode)
			d.seg = 1
			e := lists[1].PushBack(d)
			idx[d.key] = e
			if cand == nil {
				cand = e
			}
		}
		for total() > size {
			victim := lists[1].Front()
			if cand == nil || victim == cand {
				v := lists[1].Remove(victim).(*simNode)
				delete(idx, v.key)
				cand = nil
				continue
			}
			c := cand.Value.(*simNode)
			v := victim.Value.(*simNode)
			cf, vf := sk.frequency(hash(c.key)), sk.frequency(hash(v.key))
			if cf > vf || (cf >= 6 && rng.IntN(128) == 0) {
				lists[1].Remove(victim)
				delete(idx, v.key)
				cand = cand.Next()
			} else {
				next := cand.Next()
				lists[1].Remove(cand)
				delete(idx, c.key)
				cand = next
			}
		}
	}
	return hits
}

func TestZZSim(t *testing.T) {
	f, _ := os.Open("/work/shared/traces/lirs-loop.trace.gz")
	zr, _ := gzip.NewReader(f)
	sc := bufio.NewScanner(zr)
	var keys []uint64
	for sc.Scan() {
		if v, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
			keys = append(keys, v)
		}
	}
	seed := maphash.MakeSeed()
	h32 := func(k uint64) uint32 {
		h := maphash.Comparable(seed, k)
		if v := uint32(h ^ h>>32); v != 0 {
			return v
		}
		return 1
	}
	for _, size := range []int{256, 512, 1000} {
		t.Logf("loop %d: ref W-TinyLFU (our sketch, 32-bit hash) %.3f", size, float64(simWTinyLFU(keys, size, h32))/float64(len(keys)))
	}
}
