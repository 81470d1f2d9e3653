package rescache

import (
	"runtime"
	_ "unsafe" // for go:linkname
)

// pcounter counts the events of the hit path, hits and leases taken and
// released, in cells
// striped by P (the scheduler's processor). A shared atomic counter written by every hit costs
// a contended cache line per call, and xsync.Counter picks its stripe through
// a sync.Pool, which costs about as much as the map lookup it would count
// (both measured with the hit benchmark). Here the goroutine pins itself to
// its P, so that P's cell has a single writer and can be updated without a
// read-modify-write: see addSingleWriter.
type pcounter struct {
	cells []pcell
	_     [64]byte // keeps overflow off the cache lines of the fields before it
	// overflow takes the updates of Ps created after the counter, when
	// GOMAXPROCS grows; cells of those Ps would have two writers. It is
	// written with atomics on every hit of such a P, so the padding around
	// it keeps the Cache's read-mostly fields (read on every hit) off its
	// cache line.
	overflow pcell
	_        [64]byte
}

type pcell struct {
	hits, taken, released cell
	_                     [40]byte // one cache line per cell
}

func newPcounter() pcounter {
	// A cell for every CPU too, so that raising GOMAXPROCS up to the
	// number of CPUs after New does not send hits to the overflow cell.
	return pcounter{cells: make([]pcell, max(runtime.GOMAXPROCS(0), runtime.NumCPU()))}
}

// add adds to the counts of hits, leases taken and leases released.
func (c *pcounter) add(hits, taken, released int64) {
	p := procPin()
	if p < len(c.cells) {
		// Single writer: no goroutine runs on this P until procUnpin.
		cell := &c.cells[p]
		addSingleWriter(&cell.hits, hits)
		addSingleWriter(&cell.taken, taken)
		addSingleWriter(&cell.released, released)
		procUnpin()
		return
	}
	procUnpin()
	c.overflow.hits.Add(hits)
	c.overflow.taken.Add(taken)
	c.overflow.released.Add(released)
}

// load returns the hits, and the leases out: taken minus released.
//
// The cells are read one after the other while leases move between Ps, so
// a plain sum of per-P differences can be negative (a release counted on
// one P, its take on another not yet). Taken and released are each
// monotonic, and every release follows its take, so load sums the released
// counts first and the taken counts after: the result is never negative.
// It then sums the released counts again; when they did not move while the
// taken counts were read, the result lies between the leases out at the
// start and at the end of that read, so it is never above what was held at
// some instant. Under a constant stream of releases, after a few tries, it
// returns a count that is at most the leases out at an instant of the read
// (and may be below it).
func (c *pcounter) load() (hits, leased int64) {
	released := c.sumReleased()
	for try := 0; ; try++ {
		taken := c.overflow.taken.Load()
		for i := range c.cells {
			taken += c.cells[i].taken.Load()
		}
		again := c.sumReleased()
		if again == released {
			leased = taken - released
			break
		}
		if try == 3 {
			// Read after the taken counts, the released ones may include
			// releases of leases taken later: taken-again is at most the
			// leases out at the instant between the two reads, possibly
			// below it, and clamped at zero.
			leased = max(taken-again, 0)
			break
		}
		released = again
	}
	hits = c.overflow.hits.Load()
	for i := range c.cells {
		hits += c.cells[i].hits.Load()
	}
	return hits, leased
}

func (c *pcounter) sumReleased() int64 {
	n := c.overflow.released.Load()
	for i := range c.cells {
		n += c.cells[i].released.Load()
	}
	return n
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
