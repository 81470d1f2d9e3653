//go:build race || !(amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64 || mips64 || mips64le)

package rescache

import "sync"

// tokenPool keeps released lease tokens for reuse in a sync.Pool: in race
// builds and on 32-bit platforms (see tokens_plain.go for the others).
type tokenPool[K comparable, V any] struct {
	pool sync.Pool
}

func (tp *tokenPool[K, V]) init() {}

// get returns a released token, or nil.
func (tp *tokenPool[K, V]) get() *leaseToken[K, V] {
	t, _ := tp.pool.Get().(*leaseToken[K, V])
	return t
}

// put keeps t for reuse.
func (tp *tokenPool[K, V]) put(t *leaseToken[K, V]) { tp.pool.Put(t) }
