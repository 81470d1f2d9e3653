package rescache

import (
	"runtime"
	_ "unsafe" // for go:linkname
)

// pcounter counts the events of the hit path, hits and leases, in cells
// striped by P (the scheduler's processor). A shared atomic counter written by every hit costs
// a contended cache line per call, and xsync.Counter picks its stripe through
// a sync.Pool, which costs about as much as the map lookup it would count
// (both measured with the hit benchmark). Here the goroutine pins itself to
// its P, so that P's cell has a single writer and can be updated without a
// read-modify-write: see addSingleWriter.
type pcounter struct {
	cells []pcell
	// overflow takes the updates of Ps created after the counter, when
	// GOMAXPROCS grows; cells of those Ps would have two writers.
	overflow pcell
}

type pcell struct {
	hits, leases cell
	_            [48]byte // one cache line per cell
}

func newPcounter() pcounter {
	return pcounter{cells: make([]pcell, runtime.GOMAXPROCS(0))}
}

// add adds hits and leases to the counts.
func (c *pcounter) add(hits, leases int64) {
	p := procPin()
	if p < len(c.cells) {
		// Single writer: no goroutine runs on this P until procUnpin.
		cell := &c.cells[p]
		addSingleWriter(&cell.hits, hits)
		addSingleWriter(&cell.leases, leases)
		procUnpin()
		return
	}
	procUnpin()
	c.overflow.hits.Add(hits)
	c.overflow.leases.Add(leases)
}

// load sums the cells; concurrent adds may or may not be included.
func (c *pcounter) load() (hits, leases int64) {
	hits, leases = c.overflow.hits.Load(), c.overflow.leases.Load()
	for i := range c.cells {
		hits += c.cells[i].hits.Load()
		leases += c.cells[i].leases.Load()
	}
	return hits, leases
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
