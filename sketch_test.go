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
	b := newReadBuffer[int, int](runtime.GOMAXPROCS(0))
	es := make([]entry[int, int], 3*readSlots)
	count := func() (n int, seen map[*entry[int, int]]int) {
		seen = map[*entry[int, int]]int{}
		b.drainLocked(func(e *entry[int, int]) { n++; seen[e]++ })
		return n, seen
	}
	for i := range 10 {
		b.record(&es[i])
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
	for i := range es {
		b.record(&es[i])
	}
	if n, seen := count(); n < readSlots || n > 3*readSlots || len(seen) != n {
		t.Errorf("drained %d records (%d distinct) of %d; want between %d and all, each once", n, len(seen), 3*readSlots, readSlots)
	}
}
