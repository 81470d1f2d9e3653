package rescache

import (
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// table is the cache's index of its pending, found and remembered-failed
// entries by key: a hash table whose chains run through the entries
// themselves (entry.next), so that an entry costs the table one pointer
// field and a share of a bucket slot, not a node of its own. It replaces a
// general concurrent map (xsync's MapOf cost about 47 bytes per entry: a
// 32-byte node holding a second copy of the key, and its buckets); the
// cache needs only the operations below, and its entries already carry the
// key and its hash.
//
// Readers take no lock: load walks a chain with atomic loads. Writers take
// mu, and change chains only in ways that a walk in progress survives:
//
//   - an insert links the new entry at the tail of its chain, its next nil
//     (at the tail, not the head, so that the keys made first, often the
//     busiest, stay first in their chains);
//   - a delete links the predecessor past the entry and leaves the entry's
//     own next as it was, so a walk standing on it goes on along the chain;
//   - a replacement links the new entry in the old one's place, with the
//     old one's successor.
//
// A walk concurrent with these finds every entry that is in the table
// throughout the walk. A resize is the exception: it relinks every entry
// into the new buckets, so a walk of the old buckets may jump to another
// chain and miss. It makes seq odd for its duration, and a walk that
// misses trusts its miss only if seq was even and unchanged across it.
// Otherwise Load walks the key's chain in the new buckets too (growing),
// and reads the resize's progress (moved) before and after: an old chain
// is intact until the resize begins it, and its entries' new chains hold
// only them and are complete once it has finished it. So a miss of the
// old walk is trusted when the key's old chain was not begun by the end,
// a miss of the new walk when it was finished before the start, and Load
// tries again only while the resize relinks the key's own old chain (a
// few entries). A resize of a million entries takes about 190 ms, all
// under mu: inserts and deletes wait for it, lookups do not.
//
// A walk stands on entries that were in the table when it reached them,
// so a hit is always an entry that held its key in the table at some
// instant during the call. The buckets only
// grow (doubling at two entries per bucket), like Go's maps. A removed
// entry keeps its next until it is garbage, so a lease held on it keeps its
// successors reachable as long; they are entries of the same chain.
type table[K comparable, V any] struct {
	_       [64]byte
	buckets atomic.Pointer[buckets[K, V]]
	seq     atomic.Uint64 // odd while a resize relinks the entries
	seed    maphash.Seed  // read-only
	sseed   uintptr       // memhash's seed for string keys; read-only
	strKeys bool          // K's kind is string; read-only
	_       [64]byte

	// Written by a resize, read by the lookups that miss during one; off
	// the line above, which every lookup reads.
	growing atomic.Pointer[buckets[K, V]] // the buckets a resize relinks into; nil when none runs
	moved   atomic.Uint64                 // the resize's progress: 2i+1 once it began old chain i, 2i+2 once it finished it

	mu sync.Mutex // serialises writers
	n  int        // entries in the table; guarded by mu

	// onChain, when set (tests only), is called by a resize under mu
	// after it relinked each old chain, with the chain's index.
	onChain func(i int)
}

// buckets is one generation of the table's bucket array; its length is a
// power of two.
//
// Every Load reads it, so it fills a cache line of its own: a 32-byte
// object could share its line with another small object that is written
// all the time (BenchmarkGetHit's Get at -cpu 2 went from 13 to 25 ns per
// call in some runs for that), while a 64-byte object sits alone on one.
type buckets[K comparable, V any] struct {
	mask  uint32
	heads []atomic.Pointer[entry[K, V]]
	_     [64 - 32]byte
}

// minBuckets is the bucket count of a new table.
const minBuckets = 16

// maxLoad is the number of entries per bucket at which the table doubles:
// chains average 0.5 to 1 entries past the first, and the buckets cost 4 to
// 8 bytes per entry.
const maxLoad = 2

func newTable[K comparable, V any]() *table[K, V] {
	t := &table[K, V]{
		seed:    maphash.MakeSeed(),
		sseed:   uintptr(rand.Uint64()),
		strKeys: reflect.TypeFor[K]().Kind() == reflect.String,
	}
	t.buckets.Store(&buckets[K, V]{mask: minBuckets - 1, heads: make([]atomic.Pointer[entry[K, V]], minBuckets)})
	return t
}

// hash returns the hash of key by which the table files it and TinyLFU's
// sketch counts it; never 0 (the read buffer's empty slot).
//
// A string key (the common case: tenant names, addresses) is hashed with
// the runtime's memhash, as Go's maps and xsync's MapOf hash it: 3.9 ns for
// the benchmarks' keys against maphash.Comparable's 6.2, which pays for
// making any comparable value hashable; the hit path hashes once per call.
// Other keys go through maphash.Comparable.
func (t *table[K, V]) hash(key K) uint32 {
	var h uint64
	if t.strKeys {
		s := *(*string)(unsafe.Pointer(&key)) // K's underlying type is string
		if len(s) > 0 {
			h = uint64(memhash(unsafe.Pointer(unsafe.StringData(s)), t.sseed, uintptr(len(s))))
		} else {
			h = uint64(t.sseed)
		}
	} else {
		h = maphash.Comparable(t.seed, key)
	}
	if h32 := uint32(h ^ h>>32); h32 != 0 {
		return h32
	}
	return 1
}

// Load returns key's entry, if the table holds one.
func (t *table[K, V]) Load(key K) (*entry[K, V], bool) {
	h := t.hash(key)
	s := t.seq.Load()
	b := t.buckets.Load()
	hops := 0
	for e := b.heads[h&b.mask].Load(); e != nil; e = e.next.Load() {
		if e.hash == h && e.key == key {
			return e, true
		}
		// A walk across resizes may, in principle, go round: look at seq
		// now and then, and leave for loadResizing when it moved.
		if hops++; hops&15 == 0 && t.seq.Load() != s {
			break
		}
	}
	if s&1 == 0 && t.seq.Load() == s {
		return nil, false
	}
	return t.loadResizing(key, h)
}

// loadResizing is Load for a key whose walk missed while a resize ran (see
// the type's comment): it walks the old and the new chain, and trusts a
// miss by the resize's progress.
func (t *table[K, V]) loadResizing(key K, h uint32) (*entry[K, V], bool) {
	for tries := 1; ; tries++ {
		s := t.seq.Load()
		b := t.buckets.Load()
		if s&1 == 0 {
			e, whole := t.walk(b, key, h, s)
			if e != nil {
				return e, true
			}
			if whole && t.seq.Load() == s {
				return nil, false
			}
			continue // a resize began: look again
		}
		nb := t.growing.Load()
		from := t.moved.Load()
		e, oldWhole := t.walk(b, key, h, s)
		if e != nil {
			return e, true
		}
		newWhole := false
		if nb != nil {
			if e, newWhole = t.walk(nb, key, h, s); e != nil {
				return e, true
			}
		}
		to := t.moved.Load()
		if nb != nil && t.seq.Load() == s {
			i := uint64(h & (nb.mask >> 1)) // the key's old chain
			if oldWhole && to < 2*i+1 || newWhole && from >= 2*i+2 {
				return nil, false
			}
		}
		// The resize was relinking this key's chain (or it ended): look
		// again, and give the resizer the processor if it keeps on.
		if tries%16 == 0 {
			runtime.Gosched()
		}
	}
}

// walk returns key's entry in its chain of b, or nil, and whether it
// walked the whole chain: it stops early when seq moves from s, since a
// walk across resizes may, in principle, go round.
func (t *table[K, V]) walk(b *buckets[K, V], key K, h uint32, s uint64) (*entry[K, V], bool) {
	hops := 0
	for e := b.heads[h&b.mask].Load(); e != nil; e = e.next.Load() {
		if e.hash == h && e.key == key {
			return e, true
		}
		if hops++; hops&15 == 0 && t.seq.Load() != s {
			return nil, false
		}
	}
	return nil, true
}

// findLocked returns key's entry (nil if none) and the slot that points to
// it: a bucket head or the next field of its predecessor. Under mu.
func (t *table[K, V]) findLocked(key K, h uint32) (*entry[K, V], *atomic.Pointer[entry[K, V]]) {
	b := t.buckets.Load()
	slot := &b.heads[h&b.mask]
	for e := slot.Load(); e != nil; e = e.next.Load() {
		if e.hash == h && e.key == key {
			return e, slot
		}
		slot = &e.next
	}
	return nil, nil
}

// LoadOrStore returns the entry of ne.key if the table holds one (loaded),
// or else files ne, whose hash is set, and returns it.
func (t *table[K, V]) LoadOrStore(ne *entry[K, V]) (e *entry[K, V], loaded bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets.Load()
	slot := &b.heads[ne.hash&b.mask]
	for e := slot.Load(); e != nil; e = e.next.Load() {
		if e.hash == ne.hash && e.key == ne.key {
			return e, true
		}
		slot = &e.next
	}
	slot.Store(ne) // at the tail: ne.next is nil
	t.n++
	if t.n > maxLoad*len(b.heads) {
		t.growLocked(b)
	}
	return ne, false
}

// growLocked doubles the buckets, relinking every entry. Under mu.
func (t *table[K, V]) growLocked(old *buckets[K, V]) {
	nb := &buckets[K, V]{mask: uint32(2*len(old.heads) - 1), heads: make([]atomic.Pointer[entry[K, V]], 2*len(old.heads))}
	tails := make([]*entry[K, V], len(nb.heads)) // the last entry of each new chain
	t.growing.Store(nb)                          // before seq turns odd: a Load that sees it odd walks nb too
	t.moved.Store(0)
	t.seq.Add(1) // odd: a walk that misses from now on is not trusted alone
	for i := range old.heads {
		t.moved.Store(2*uint64(i) + 1)
		e := old.heads[i].Load()
		for e != nil {
			next := e.next.Load()
			j := e.hash & nb.mask
			e.next.Store(nil)
			if tails[j] == nil {
				nb.heads[j].Store(e)
			} else {
				tails[j].next.Store(e)
			}
			tails[j] = e
			e = next
		}
		t.moved.Store(2*uint64(i) + 2)
		if t.onChain != nil {
			t.onChain(i)
		}
	}
	t.buckets.Store(nb)
	t.seq.Add(1)
	t.growing.Store(nil)
}

// deleteIfSame removes e if it is still its key's entry.
func (t *table[K, V]) deleteIfSame(e *entry[K, V]) {
	t.mu.Lock()
	if cur, slot := t.findLocked(e.key, e.hash); cur == e {
		slot.Store(e.next.Load()) // e.next stays: a walk on e goes on
		t.n--
	}
	t.mu.Unlock()
}

// replaceIfSame puts ne (same key, hash set) in old's place if old is
// still its key's entry, and reports whether it did.
func (t *table[K, V]) replaceIfSame(old, ne *entry[K, V]) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur, slot := t.findLocked(old.key, old.hash)
	if cur != old {
		return false
	}
	ne.next.Store(old.next.Load())
	slot.Store(ne)
	return true
}

// Size returns the number of entries in the table.
func (t *table[K, V]) Size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Range calls f for the entries of the table, with no lock held, until f
// returns false. Every entry in the table for the whole of Range is
// visited once; one added or removed meanwhile may or may not be. It goes
// through the hash classes of the buckets as they were when it started,
// one at a time under mu: a class is one bucket then, and the buckets it
// split into since (the buckets only double, so class i of n buckets is
// buckets i, i+n, i+2n, ... of any later generation).
func (t *table[K, V]) Range(f func(key K, e *entry[K, V]) bool) {
	n := len(t.buckets.Load().heads)
	var batch []*entry[K, V]
	for i := 0; i < n; i++ {
		batch = batch[:0]
		t.mu.Lock()
		b := t.buckets.Load()
		for j := i; j < len(b.heads); j += n {
			for e := b.heads[j].Load(); e != nil; e = e.next.Load() {
				batch = append(batch, e)
			}
		}
		t.mu.Unlock()
		for k, e := range batch {
			batch[k] = nil
			if !f(e.key, e) {
				return
			}
		}
	}
}

// memhash is the runtime's hash of memory, which its maps use for strings.
// The runtime keeps it available to linkname (runtime/alg.go lists the
// packages that use it so): hash/maphash reaches it only through
// maphash.String or maphash.Comparable, both slower on the hit path.
//
//go:noescape
//go:linkname memhash runtime.memhash
func memhash(p unsafe.Pointer, h, s uintptr) uintptr
