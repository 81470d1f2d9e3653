package rescache

import "github.com/rescache/rescache/internal/percpu"

// pcounter counts the events of the hit path, hits and leases taken and
// released, in cells striped by P (the scheduler's processor; see the
// percpu package for why not a shared atomic, sync.Pool or xsync.Counter).
// The goroutine pins itself to its P, so that P's cell has a single writer
// and is updated without a read-modify-write.
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
	hits, taken, released percpu.Cell
	_                     [40]byte // one cache line per cell
}

func newPcounter() pcounter {
	return pcounter{cells: make([]pcell, percpu.Slots())}
}

// add adds to the counts of hits, leases taken and leases released.
func (c *pcounter) add(hits, taken, released int64) {
	p := percpu.Pin()
	if p < len(c.cells) {
		c.cells[p].addPinned(hits, taken, released)
		percpu.Unpin()
		return
	}
	percpu.Unpin()
	c.overflow.hits.Add(hits)
	c.overflow.taken.Add(taken)
	c.overflow.released.Add(released)
}

// addPinned is add for the goroutine pinned to the cell's P.
func (cell *pcell) addPinned(hits, taken, released int64) {
	cell.hits.AddPinned(hits)
	cell.taken.AddPinned(taken)
	cell.released.AddPinned(released)
}

// countHit is c.add(1, taken, 0) for a hit of e in a TinyLFU cache: within
// the same pin, it also records e in the read buffer. It reports the ring
// of the buffer that has just wrapped, or -1 (see Cache.drainReads). (A
// function, not a method: a method cannot have type parameters.)
func countHit[K comparable, V any](c *pcounter, reads *readBuffer[K, V], e *entry[K, V], taken int64) (wrapped int) {
	p := percpu.Pin()
	if p < len(c.cells) {
		c.cells[p].addPinned(1, taken, 0)
		wrapped = reads.recordPinned(p, e)
		percpu.Unpin()
		return wrapped
	}
	percpu.Unpin()
	c.overflow.hits.Add(1)
	c.overflow.taken.Add(taken)
	return -1
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
