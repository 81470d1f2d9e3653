package percpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// object is what a Counts user counts: a shared count, a dead mark, and
// what the test knows of it.
type object struct {
	shared atomic.Int64 // references counted here: taken here, or moved by Freeze
	dead   atomic.Bool
	held   atomic.Int64 // references the test's goroutines hold, however counted
}

// acquire is a user's acquire: a slot of its P, or the shared count; then
// the check that the object still lives. It reports the slot (-1: the
// shared count) and false when the object is dead.
func (o *object) acquire(c *Counts[object], h uint32) (int32, bool) {
	p := Pin()
	i := c.AcquirePinned(p, o, h)
	Unpin()
	if i < 0 {
		if o.dead.Load() {
			return -1, false
		}
		o.shared.Add(1)
		if o.dead.Load() {
			o.shared.Add(-1)
			return -1, false
		}
		return -1, true
	}
	if o.dead.Load() {
		if c.Release(i) {
			o.shared.Add(-1)
		}
		return -1, false
	}
	return i, true
}

func (o *object) release(c *Counts[object], i int32) {
	if i < 0 || c.Release(i) {
		o.shared.Add(-1)
	}
}

// TestCountsFreezeMovesEveryReference runs acquirers on every P against
// objects that share slots (one hash bucket for two of them), while a
// killer marks objects dead and freezes them: after Freeze, the shared
// count is at least every reference held (none is missed), and once all
// are released it is 0 (none is lost or counted twice). Under -race the
// atomic build checks the same algorithm.
func TestCountsFreezeMovesEveryReference(t *testing.T) {
	for round := range 200 {
		var c Counts[object]
		c.Init()
		objs := make([]*object, 4)
		for i := range objs {
			objs[i] = new(object)
		}
		hash := func(i int) uint32 { return uint32(i / 2) } // objects 0,1 and 2,3 share a slot
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 2 * runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []struct {
					o    int
					slot int32
				}
				for n := 0; ; n++ {
					select {
					case <-stop:
						for _, m := range mine {
							objs[m.o].held.Add(-1)
							objs[m.o].release(&c, m.slot)
						}
						return
					default:
					}
					k := (n + g) % len(objs)
					if slot, ok := objs[k].acquire(&c, hash(k)); ok {
						objs[k].held.Add(1)
						mine = append(mine, struct {
							o    int
							slot int32
						}{k, slot})
					}
					if len(mine) > 3 || (len(mine) > 0 && n%2 == 0) {
						m := mine[0]
						mine = mine[1:]
						objs[m.o].held.Add(-1)
						objs[m.o].release(&c, m.slot)
					}
					if n%64 == 0 {
						runtime.Gosched()
					}
				}
			}()
		}
		for k, o := range objs {
			runtime.Gosched()
			o.dead.Store(true)
			// No reference is acquired once the mark is seen, so after
			// Freeze the shared count is every reference still out, which
			// only goes down, and held counts some of them (it counts one
			// after its acquire, and stops before its release): read in
			// that order, shared can never be below held.
			c.Freeze(o, hash(k), func(n int64) { o.shared.Add(n) })
			for range 50 {
				s := o.shared.Load()
				if h := o.held.Load(); s < h {
					t.Fatalf("round %d: object %d: shared count %d below the %d references held", round, k, s, h)
				}
				runtime.Gosched()
			}
		}
		close(stop)
		wg.Wait()
		for k, o := range objs {
			if got := o.shared.Load(); got != 0 {
				t.Fatalf("round %d: object %d: shared count %d after every release; want 0", round, k, got)
			}
			if c.Held(o, hash(k)) {
				t.Fatalf("round %d: object %d: still held after every release", round, k)
			}
		}
	}
}
