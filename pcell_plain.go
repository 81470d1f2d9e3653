//go:build !race && (amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "sync/atomic"

// cell is a counter with a single writer, read by others.
//
// On a 64-bit platform it is a plain word: its writer updates it with an
// ordinary load and store (an atomic store is a full fence on amd64, and
// costs as much as the lookup it counts), and a reader of a word-sized
// value sees some value written to it, never a torn one (the Go memory
// model's rule for word-sized races), at worst a slightly old count. The
// race detector would report these reads; race builds use atomics instead
// (pcell_atomic.go).
type cell struct{ n int64 }

func addSingleWriter(c *cell, d int64) {
	if d != 0 {
		c.n += d
	}
}

// Load returns the count, possibly missing the writer's latest adds.
func (c *cell) Load() int64 { return c.n }

// Add adds d for a writer that is not the cell's single writer (the
// overflow cell, shared by Ps added after the counter was made).
func (c *cell) Add(d int64) { atomic.AddInt64(&c.n, d) }
