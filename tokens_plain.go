//go:build !race && (amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "runtime"

// tokenPool keeps released lease tokens for reuse, in a small stack per P
// (the scheduler's processor). Taking and giving back a token pins the
// goroutine to its P, so each stack has a single user at a time and needs
// no atomic operation: cheaper than a sync.Pool, whose Get and Put each
// cost about as much as the map lookup of a hit (measured with
// BenchmarkGetHit). A stack that is empty allocates; one that is full
// drops the token for the garbage collector. Race builds use a sync.Pool
// instead (tokens_race.go): the race detector cannot see that pinning
// orders the accesses.
type tokenPool[K comparable, V any] struct {
	stacks []tokenStack[K, V]
}

type tokenStack[K comparable, V any] struct {
	n     int
	items [15]*leaseToken[K, V]
}

func (tp *tokenPool[K, V]) init() {
	tp.stacks = make([]tokenStack[K, V], max(runtime.GOMAXPROCS(0), runtime.NumCPU()))
}

// get returns a released token, or nil.
func (tp *tokenPool[K, V]) get() *leaseToken[K, V] {
	var t *leaseToken[K, V]
	p := procPin()
	if p < len(tp.stacks) {
		if s := &tp.stacks[p]; s.n > 0 {
			s.n--
			t, s.items[s.n] = s.items[s.n], nil
		}
	}
	procUnpin()
	return t
}

// put keeps t for reuse, or drops it when its P's stack is full.
func (tp *tokenPool[K, V]) put(t *leaseToken[K, V]) {
	p := procPin()
	if p < len(tp.stacks) {
		if s := &tp.stacks[p]; s.n < len(s.items) {
			s.items[s.n] = t
			s.n++
		}
	}
	procUnpin()
}
