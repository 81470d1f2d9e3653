//go:build race || !(amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package percpu

import "sync/atomic"

// Cell is a count with a single writer, read by anyone: in race builds and
// on 32-bit platforms its loads and stores are atomic (see plain.go for the
// others). The algorithm around it is the same.
type Cell struct{ n atomic.Int64 }

// Load returns the count.
func (c *Cell) Load() int64 { return c.n.Load() }

func (c *Cell) store(n int64) { c.n.Store(n) }

// Add adds d atomically, for a writer that is not the cell's single writer
// (a cell shared by Ps beyond a structure's slots).
func (c *Cell) Add(d int64) { c.n.Add(d) }

// ringSlot is a slot of a Ring, atomic here (see plain.go): the atomic
// store of a record and the swap of the drain that takes it order, for the
// race detector, what the writer did before its store and what the drainer
// reads of the object.
type ringSlot[T any] struct{ p atomic.Pointer[T] }

func (s *ringSlot[T]) store(t *T) { s.p.Store(t) }

func (s *ringSlot[T]) take() *T { return s.p.Swap(nil) }

// stackSlot is a slot of a Stack, atomic here (see plain.go): the atomic
// store of a push and the atomic load of the pop that takes the object
// order, for the race detector, what the pusher wrote to the object before
// what the popper reads.
type stackSlot[T any] struct{ p atomic.Pointer[T] }

func (s *stackSlot[T]) load() *T   { return s.p.Load() }
func (s *stackSlot[T]) store(t *T) { s.p.Store(t) }

// ownedPtr is a pointer with one writer, its P, read by anyone; atomic
// here (see plain.go).
type ownedPtr[T any] struct{ p atomic.Pointer[T] }

func (o *ownedPtr[T]) load() *T   { return o.p.Load() }
func (o *ownedPtr[T]) store(t *T) { o.p.Store(t) }
