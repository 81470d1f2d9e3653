//go:build !race && (amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package percpu

import "sync/atomic"

// Cell is a count with a single writer, read by anyone.
//
// On a 64-bit platform it is a plain word: its writer, pinned to its P,
// updates it with an ordinary load and store, and a reader of a word-sized
// value sees some value written to it, never a torn one (the Go memory
// model's rule for word-sized races), at worst a slightly old count. The
// race detector would report these reads; race builds use atomics instead
// (atomic.go), around the same algorithm.
type Cell struct{ n int64 }

// Load returns the count, possibly missing the writer's latest adds.
func (c *Cell) Load() int64 { return c.n }

func (c *Cell) store(n int64) { c.n = n }

// Add adds d atomically, for a writer that is not the cell's single writer
// (a cell shared by Ps beyond a structure's slots).
func (c *Cell) Add(d int64) { atomic.AddInt64(&c.n, d) }

// ringSlot is a slot of a Ring: its P stores with a plain store, and the
// drain takes it with a plain load and store of nil. A pointer-sized store
// is never torn, so the drain reads the new record or what was there
// before; a store of its P that lands between the drain's load and its
// store of nil is lost (the buffer is lossy), never read twice. Both
// stores go through the garbage collector's write barrier, as every
// pointer store does. An atomic swap would cost a locked instruction per
// slot in every drain.
type ringSlot[T any] struct{ p *T }

func (s *ringSlot[T]) store(t *T) { s.p = t }

func (s *ringSlot[T]) take() *T { t := s.p; s.p = nil; return t }

// stackSlot is a slot of a Stack: only its pinned P reads and writes it.
type stackSlot[T any] struct{ p *T }

func (s *stackSlot[T]) load() *T   { return s.p }
func (s *stackSlot[T]) store(t *T) { s.p = t }

// ownedPtr is a pointer that its P writes with a plain store (while pinned)
// and anyone reads with a plain load: a pointer-sized load is never torn,
// and the users order it by an atomic word written after it (see Counts).
type ownedPtr[T any] struct{ p *T }

func (o *ownedPtr[T]) load() *T   { return o.p }
func (o *ownedPtr[T]) store(t *T) { o.p = t }
