package percpu

import (
	"sync"
	"testing"
)

// counted is a slot array as its users lay it out: one padded cell per P,
// and one shared cell for Ps beyond the slots.
type counted struct {
	cells    []paddedCell
	overflow Cell
}

type paddedCell struct {
	c Cell
	_ [56]byte
}

func (k *counted) add(d int64) {
	p := Pin()
	if p < len(k.cells) {
		k.cells[p].c.AddPinned(d)
		Unpin()
		return
	}
	Unpin()
	k.overflow.Add(d)
}

func (k *counted) sum() int64 {
	n := k.overflow.Load()
	for i := range k.cells {
		n += k.cells[i].c.Load()
	}
	return n
}

// TestCellsCountEveryAdd runs writers on every P at once: no add is lost.
func TestCellsCountEveryAdd(t *testing.T) {
	k := &counted{cells: make([]paddedCell, Slots())}
	const goroutines, adds = 8, 20000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range adds {
				k.add(int64(i % 3)) // 0, 1, 2: AddPinned(0) too
			}
		}()
	}
	wg.Wait()
	var want int64
	for i := range adds {
		want += int64(i % 3)
	}
	want *= goroutines
	if got := k.sum(); got != want {
		t.Fatalf("sum = %d; want %d", got, want)
	}
}

// obj is what the stacks keep: its users write it before a push and read
// it after the pop, as lease tokens are, so that -race checks that the
// stack orders those accesses.
type obj struct {
	owner int
	uses  int
}

// TestStacksHandObjectsOver has goroutines pop objects (or make them), use
// them, and push them back on whatever P they run on then.
func TestStacksHandObjectsOver(t *testing.T) {
	stacks := make([]Stack[obj], Slots())
	const goroutines, rounds = 8, 5000
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				var o *obj
				p := Pin()
				if p < len(stacks) {
					o = stacks[p].PopPinned()
				}
				Unpin()
				if o == nil {
					o = &obj{}
					mu.Lock()
					made++
					mu.Unlock()
				}
				o.owner = g
				o.uses++
				p = Pin()
				if p < len(stacks) {
					stacks[p].PushPinned(o)
				}
				Unpin()
			}
		}()
	}
	wg.Wait()
	kept := 0
	for i := range stacks {
		for stacks[i].PopPinned() != nil { // no goroutine runs: safe unpinned
			kept++
		}
	}
	if kept > len(stacks)*StackSize || kept > made {
		t.Fatalf("stacks kept %d objects, made %d, room %d", kept, made, len(stacks)*StackSize)
	}
	if made >= goroutines*rounds {
		t.Fatalf("made %d objects for %d uses: nothing was reused", made, goroutines*rounds)
	}
}

// TestStackBounds pushes past StackSize and pops past empty.
func TestStackBounds(t *testing.T) {
	var s Stack[obj]
	objs := make([]obj, StackSize+1)
	for i := range objs {
		if got, want := s.PushPinned(&objs[i]), i < StackSize; got != want {
			t.Fatalf("push %d = %v; want %v", i, got, want)
		}
	}
	for i := StackSize - 1; i >= 0; i-- {
		if got := s.PopPinned(); got != &objs[i] {
			t.Fatalf("pop = %p; want %p (object %d)", got, &objs[i], i)
		}
	}
	if got := s.PopPinned(); got != nil {
		t.Fatalf("pop of an empty stack = %p; want nil", got)
	}
}

// TestRingsDrainEachRecordOnce has every P put records while a drainer
// empties the rings: no record is drained twice, and none that was not
// put; when the writers stop, a last drain leaves the rings empty.
func TestRingsDrainEachRecordOnce(t *testing.T) {
	rings := make([]Ring[uint32], Slots())
	const goroutines, puts = 4, 20000
	var mu sync.Mutex // the drainer's lock
	seen := make(map[uint32]int)
	drain := func() {
		mu.Lock()
		defer mu.Unlock()
		for i := range rings {
			rings[i].Drain(func(h *uint32) { seen[*h]++ })
		}
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range puts {
				h := uint32(g*puts + i + 1) // distinct
				p := Pin()
				if p < len(rings) {
					rings[p].PutPinned(&h)
				}
				Unpin()
				if i%1000 == 0 {
					drain()
				}
			}
		}()
	}
	wg.Wait()
	drain()
	drain()
	for h, n := range seen {
		if n != 1 || h == 0 || h > goroutines*puts {
			t.Fatalf("record %d drained %d times", h, n)
		}
	}
	if len(seen) == 0 {
		t.Fatal("nothing drained")
	}
	before := len(seen)
	drain()
	if len(seen) != before {
		t.Fatalf("a drain of empty rings found %d records", len(seen)-before)
	}
}
