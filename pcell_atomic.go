//go:build race || !(amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "sync/atomic"

// cell is a counter with a single writer, read by others: an atomic in race
// builds and on 32-bit platforms (see pcell_plain.go for the others).
type cell struct{ n atomic.Int64 }

func addSingleWriter(c *cell, d int64) {
	if d != 0 {
		c.n.Store(c.n.Load() + d)
	}
}

// Load returns the count.
func (c *cell) Load() int64 { return c.n.Load() }

// Add adds d atomically.
func (c *cell) Add(d int64) { c.n.Add(d) }
