package rescache

import (
	"runtime"
	"testing"
)

func TestSketchCountsAndAges(t *testing.T) {
	s := newSketch(64)
	for i := range 20 {
		s.increment(42)
		if got, want := s.frequency(42), min(uint64(i+1), 15); got != want {
			t.Fatalf("frequency after %d increments = %d; want %d", i+1, got, want)
		}
	}
	if f := s.frequency(43); f > 1 {
		t.Errorf("frequency of a hash never counted = %d; want at most 1 (a collision)", f)
	}
	// Fill the sample with other hashes: the counters are halved.
	for i := uint32(1000); s.frequency(42) == 15; i++ {
		s.increment(i)
	}
	if f := s.frequency(42); f != 7 {
		t.Errorf("frequency after the reset = %d; want 7 (15 halved)", f)
	}
}

func TestReadBufferDrainsAndLoses(t *testing.T) {
	b := newReadBuffer(runtime.GOMAXPROCS(0))
	count := func() (n int, seen map[uint32]int) {
		seen = map[uint32]int{}
		b.drainLocked(func(h uint32) { n++; seen[h]++ })
		return n, seen
	}
	for h := uint32(1); h <= 10; h++ {
		b.record(h)
	}
	if n, seen := count(); n != 10 || len(seen) != 10 {
		t.Errorf("drained %d records (%d distinct); want 10", n, len(seen))
	}
	if n, _ := count(); n != 0 {
		t.Errorf("second drain = %d records; want 0", n)
	}
	// More than a ring between two drains: the oldest are lost, the rest
	// are counted once. (A goroutine may move between Ps: at most a
	// ring per P.)
	for h := uint32(1); h <= 3*readSlots; h++ {
		b.record(h)
	}
	if n, seen := count(); n < readSlots || n > 3*readSlots || len(seen) != n {
		t.Errorf("drained %d records (%d distinct) of %d; want between %d and all, each once", n, len(seen), 3*readSlots, readSlots)
	}
}
