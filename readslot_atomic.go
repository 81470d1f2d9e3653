//go:build race || !(amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "sync/atomic"

// readSlot is a slot of a read buffer's ring: written by the ring's single
// writer, emptied by the drain. Race builds and 32-bit platforms use an
// atomic (see readslot_plain.go for the others).
type readSlot struct{ h atomic.Uint32 }

func (s *readSlot) store(h uint32) { s.h.Store(h) }

func (s *readSlot) take() uint32 { return s.h.Swap(0) }
