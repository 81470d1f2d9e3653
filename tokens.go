package rescache

import "github.com/rescache/rescache/internal/percpu"

// tokenPool keeps released lease tokens for reuse, in a small stack per P
// (percpu.Stack): taking and giving back a token pins the goroutine to its
// P, so each stack has a single user at a time and needs no
// read-modify-write, which makes it cheaper than a sync.Pool (see the
// percpu package doc). A stack that is empty allocates; one that is full
// drops the token for the garbage collector; a P beyond the stacks
// (GOMAXPROCS raised past the CPUs after New) does both.
type tokenPool[K comparable, V any] struct {
	stacks []percpu.Stack[leaseToken[K, V]]
}

func (tp *tokenPool[K, V]) init() {
	tp.stacks = make([]percpu.Stack[leaseToken[K, V]], percpu.Slots())
}

// get returns a released token, or nil.
func (tp *tokenPool[K, V]) get() *leaseToken[K, V] {
	var t *leaseToken[K, V]
	p := percpu.Pin()
	if p < len(tp.stacks) {
		t = tp.stacks[p].PopPinned()
	}
	percpu.Unpin()
	return t
}

// put keeps t for reuse, or drops it when its P's stack is full.
func (tp *tokenPool[K, V]) put(t *leaseToken[K, V]) {
	p := percpu.Pin()
	if p < len(tp.stacks) {
		tp.stacks[p].PushPinned(t)
	}
	percpu.Unpin()
}
