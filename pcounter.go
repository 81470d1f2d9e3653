package rescache

import (
	"runtime"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// pcounter is a counter striped by P (the scheduler's processor), for the
// events of the hit path. A shared atomic counter written by every hit costs
// a contended cache line per call, and xsync.Counter picks its stripe through
// a sync.Pool, which costs about as much as the map lookup it would count
// (both measured with the hit benchmark). Here the goroutine pins itself to
// its P, so that P's cell has a single writer and can be updated with a plain
// atomic load and store, without a read-modify-write.
type pcounter struct {
	cells []pcell
	// overflow takes the updates of Ps created after the counter, when
	// GOMAXPROCS grows; cells of those Ps would have two writers.
	overflow atomic.Int64
}

type pcell struct {
	n atomic.Int64
	_ [56]byte // one cache line per cell
}

func newPcounter() pcounter {
	return pcounter{cells: make([]pcell, runtime.GOMAXPROCS(0))}
}

func (c *pcounter) add(d int64) {
	p := procPin()
	if p < len(c.cells) {
		// Single writer: no goroutine runs on this P until procUnpin.
		n := &c.cells[p].n
		n.Store(n.Load() + d)
		procUnpin()
		return
	}
	procUnpin()
	c.overflow.Add(d)
}

// load sums the cells; concurrent adds may or may not be included.
func (c *pcounter) load() int64 {
	sum := c.overflow.Load()
	for i := range c.cells {
		sum += c.cells[i].n.Load()
	}
	return sum
}

// procPin disables preemption and returns the id of the current P. It is
// runtime.procPin, which the runtime keeps available to linkname users
// (go.dev/issue/67401).
//
//go:linkname procPin runtime.procPin
func procPin() int

// procUnpin undoes procPin.
//
//go:linkname procUnpin runtime.procUnpin
func procUnpin()
