package rescache

// indexed is a binary min-heap of entries that keeps each entry's position
// in the entry itself, so that an entry is fixed or removed in O(log n)
// wherever it sits. One implementation serves the two orders the cache
// keeps: recency (by nodeUsed, position in place: the policies' heaps and
// Cache.parked) and byDeadline (by deadline, position in life.idx:
// Cache.byAge). It is container/heap's algorithm, written over the entries
// directly so that no call goes through heap.Interface and no entry is
// boxed in an any. Every method is called under Cache.mu.
type indexed[K comparable, V any, O heapOrder[K, V]] []*entry[K, V]

// heapOrder is the key of an indexed heap and where an entry keeps its
// position in it. Implementations are empty structs.
type heapOrder[K comparable, V any] interface {
	less(a, b *entry[K, V]) bool
	pos(e *entry[K, V]) int
	setPos(e *entry[K, V], i int)
}

// byUse orders entries by nodeUsed, the used stamp they were placed with;
// their position is in place (see entry.idx).
type byUse[K comparable, V any] struct{}

func (byUse[K, V]) less(a, b *entry[K, V]) bool  { return a.nodeUsed < b.nodeUsed }
func (byUse[K, V]) pos(e *entry[K, V]) int       { return e.idx() }
func (byUse[K, V]) setPos(e *entry[K, V], i int) { e.setIdx(i) }

// bySoonest orders entries by deadline; their position is life.idx. Only
// entries with a lifetime (life set, MaxLifetime) enter it.
type bySoonest[K comparable, V any] struct{}

func (bySoonest[K, V]) less(a, b *entry[K, V]) bool  { return a.life.deadline < b.life.deadline }
func (bySoonest[K, V]) pos(e *entry[K, V]) int       { return int(e.life.idx) }
func (bySoonest[K, V]) setPos(e *entry[K, V], i int) { e.life.idx = int32(i) }

// recency is the heap of found entries by last use; see the comment at the
// top of evict.go.
type recency[K comparable, V any] = indexed[K, V, byUse[K, V]]

// byDeadline is a min-heap of found entries by deadline, for the lifetime
// sweep: with LifetimeJitter, build order is not deadline order.
type byDeadline[K comparable, V any] = indexed[K, V, bySoonest[K, V]]

func (h *indexed[K, V, O]) set(i int, e *entry[K, V]) {
	var o O
	(*h)[i] = e
	o.setPos(e, i)
}

func (h *indexed[K, V, O]) swap(i, j int) {
	ei, ej := (*h)[i], (*h)[j]
	h.set(i, ej)
	h.set(j, ei)
}

// push adds e.
func (h *indexed[K, V, O]) push(e *entry[K, V]) {
	var o O
	*h = append(*h, e)
	n := len(*h) - 1
	o.setPos(e, n)
	h.up(n)
}

// pop removes the least entry (the heap must not be empty) and returns it,
// its position set to -1.
func (h *indexed[K, V, O]) pop() *entry[K, V] {
	return h.remove(0)
}

// remove removes the entry at position i and returns it, its position set
// to -1.
func (h *indexed[K, V, O]) remove(i int) *entry[K, V] {
	s := *h
	n := len(s) - 1
	e := s[i]
	if n != i {
		h.set(i, s[n])
	}
	s[n] = nil
	*h = s[:n]
	if n != i && !h.down(i) {
		h.up(i)
	}
	var o O
	o.setPos(e, -1)
	return e
}

// fix restores the order after the key of the entry at position i changed.
func (h *indexed[K, V, O]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *indexed[K, V, O]) up(j int) {
	var o O
	s := *h
	for j > 0 {
		i := (j - 1) / 2
		if !o.less(s[j], s[i]) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

// down moves the entry at i0 down while a child is less, and reports
// whether it moved.
func (h *indexed[K, V, O]) down(i0 int) bool {
	var o O
	s := *h
	n := len(s)
	i := i0
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if r := j + 1; r < n && o.less(s[r], s[j]) {
			j = r
		}
		if !o.less(s[j], s[i]) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
