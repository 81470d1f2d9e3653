//go:build !race && (amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "sync/atomic"

// readSlot is a slot of a read buffer's ring: written by the ring's single
// writer, emptied by the drain.
//
// The writer stores with a plain store, as pcell_plain.go's counters do (an
// atomic store is a full fence on amd64 and would cost as much as the rest
// of the hit path); the drain takes the slot with an atomic swap. A
// word-sized store is never torn, so the drain reads either the new hash
// or what was there before (0, or an older hash that a wrap overwrote):
// a hit may be lost or counted one drain late, never counted twice, which
// is what a lossy buffer allows. The race detector would report the
// writer's store; race builds use atomics instead (readslot_atomic.go).
type readSlot struct{ h uint32 }

func (s *readSlot) store(h uint32) { s.h = h }

func (s *readSlot) take() uint32 { return atomic.SwapUint32(&s.h, 0) }
