package rescache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leanovate/gopter"
	"github.com/leanovate/gopter/gen"
	"github.com/leanovate/gopter/prop"
)

// tableEntry returns a new entry for key, hashed by t, as Cache.newEntry
// makes them.
func tableEntry(t *table[int, int], key int) *entry[int, int] {
	e := &entry[int, int]{key: key}
	e.hash = t.hash(key)
	return e
}

// tableOp is one operation of TestTableModel: 0 LoadOrStore, 1 delete of
// the key's current entry, 2 delete of a stale entry, 3 replace.
type tableOp struct{ kind, key int }

// TestTableModel checks the table against a Go map over random sequences
// of its operations, long enough to grow it several times, with every
// operation's answer, Size and Range compared after each step.
func TestTableModel(t *testing.T) {
	params := gopter.DefaultTestParameters()
	params.MinSuccessfulTests = 200
	props := gopter.NewProperties(params)
	op := gopter.CombineGens(gen.IntRange(0, 3), gen.IntRange(0, 299)).Map(func(v []any) tableOp {
		return tableOp{v[0].(int), v[1].(int)}
	})
	props.Property("table behaves as a map", prop.ForAll(func(ops []tableOp) string {
		tb := newTable[int, int]()
		model := map[int]*entry[int, int]{}
		for i, o := range ops {
			switch o.kind {
			case 0:
				ne := tableEntry(tb, o.key)
				got, loaded := tb.LoadOrStore(ne)
				want, had := model[o.key]
				if !had {
					want = ne
					model[o.key] = ne
				}
				if got != want || loaded != had {
					return fmt.Sprintf("op %d: LoadOrStore(%d) = %p, %v; want %p, %v", i, o.key, got, loaded, want, had)
				}
			case 1:
				if e, ok := model[o.key]; ok {
					tb.deleteIfSame(e)
					delete(model, o.key)
				}
			case 2:
				tb.deleteIfSame(tableEntry(tb, o.key)) // never filed: a no-op
			case 3:
				ne := tableEntry(tb, o.key)
				old, ok := model[o.key]
				if !ok {
					old = tableEntry(tb, o.key)
				}
				if got := tb.replaceIfSame(old, ne); got != ok {
					return fmt.Sprintf("op %d: replaceIfSame(%d) = %v; want %v", i, o.key, got, ok)
				}
				if ok {
					model[o.key] = ne
				}
			}
			if tb.Size() != len(model) {
				return fmt.Sprintf("op %d: Size() = %d; want %d", i, tb.Size(), len(model))
			}
		}
		for k := range 300 {
			got, ok := tb.Load(k)
			if want, had := model[k]; got != want || ok != had {
				return fmt.Sprintf("Load(%d) = %p, %v; want %p, %v", k, got, ok, want, had)
			}
		}
		seen := map[int]int{}
		tb.Range(func(k int, e *entry[int, int]) bool {
			seen[k]++
			if model[k] != e {
				seen[-1]++
			}
			return true
		})
		if len(seen) != len(model) {
			return fmt.Sprintf("Range visited %d keys (%v); want %d", len(seen), seen[-1], len(model))
		}
		for k, n := range seen {
			if n != 1 {
				return fmt.Sprintf("Range visited %d %d times", k, n)
			}
		}
		return ""
	}, gen.SliceOfN(1500, op)))
	props.TestingRun(t)
}

// TestTableWalksSurviveWriters runs lock-free Loads of keys that stay in
// the table while writers insert, delete and replace other keys (growing
// the table from its first buckets to thousands) and while Range runs: a
// Load of a stable key never misses or returns another entry, and every
// Range visits each stable key exactly once.
func TestTableWalksSurviveWriters(t *testing.T) {
	tb := newTable[int, int]()
	const stable = 64
	want := make([]*entry[int, int], stable)
	for k := range stable {
		want[k], _ = tb.LoadOrStore(tableEntry(tb, k))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var failed atomic.Value
	fail := func(format string, args ...any) {
		failed.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		stop.Store(true)
	}
	for r := range 3 {
		wg.Go(func() {
			for i := r; !stop.Load(); i++ {
				k := i % stable
				if e, ok := tb.Load(k); !ok || e != want[k] {
					fail("Load(%d) = %p, %v; want %p", k, e, ok, want[k])
				}
				if e, ok := tb.Load(-1 - k); ok { // never stored
					fail("Load(%d) = %p; want a miss", -1-k, e)
				}
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			seen := make([]int, stable)
			tb.Range(func(k int, e *entry[int, int]) bool {
				if k < stable {
					seen[k]++
				}
				return true
			})
			for k, n := range seen {
				if n != 1 {
					fail("Range visited stable key %d %d times", k, n)
				}
			}
		}
	})
	const churn = 20_000
	for i := stable; i < stable+churn && !stop.Load(); i++ {
		e, _ := tb.LoadOrStore(tableEntry(tb, i))
		switch i % 3 {
		case 0:
			tb.deleteIfSame(e)
		case 1:
			tb.replaceIfSame(e, tableEntry(tb, i))
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg := failed.Load(); msg != nil {
		t.Fatal(msg)
	}
	if got, want := tb.Size(), stable+churn-churn/3; got < want-1 || got > want+1 {
		t.Fatalf("Size() = %d; want about %d", got, want)
	}
	if n := len(tb.buckets.Load().heads); n < (stable+churn)/(2*maxLoad) {
		t.Fatalf("%d buckets after %d entries; the table did not grow", n, tb.Size())
	}
}

// TestTableLoadDuringResize pauses a resize halfway, holding the table's
// lock, and looks up every key, and keys never stored, meanwhile: every
// lookup must answer at once and rightly, from the old chains not yet
// relinked and from the new ones already complete. A Load that waited
// for the resize (or for the lock) would never return.
func TestTableLoadDuringResize(t *testing.T) {
	tb := newTable[int, int]()
	const n = maxLoad * minBuckets * 64 // the next insert doubles 1,024 buckets
	want := make([]*entry[int, int], n)
	for k := range want {
		want[k], _ = tb.LoadOrStore(tableEntry(tb, k))
	}
	old := len(tb.buckets.Load().heads)
	paused, resume := make(chan struct{}), make(chan struct{})
	tb.onChain = func(i int) {
		if i == old/2 {
			close(paused)
			<-resume
		}
	}
	grown := make(chan struct{})
	go func() {
		defer close(grown)
		tb.LoadOrStore(tableEntry(tb, n)) // grows, and pauses in onChain
	}()
	<-paused
	if s := tb.seq.Load(); s&1 == 0 {
		t.Fatalf("seq %d is even in the middle of a resize", s)
	}
	looked := make(chan string, 1)
	go func() {
		for k, e := range want {
			if got, ok := tb.Load(k); !ok || got != e {
				looked <- fmt.Sprintf("Load(%d) = %p, %v during the resize; want %p", k, got, ok, e)
				return
			}
			if got, ok := tb.Load(-1 - k); ok {
				looked <- fmt.Sprintf("Load(%d) = %p during the resize; want a miss", -1-k, got)
				return
			}
		}
		looked <- ""
	}()
	select {
	case msg := <-looked:
		if msg != "" {
			t.Error(msg)
		}
	case <-time.After(time.Minute): // a guard against a hang, not a wait for an event
		t.Error("lookups did not return while a resize was paused: Load waits for it")
	}
	close(resume)
	<-grown
	if got := len(tb.buckets.Load().heads); got != 2*old {
		t.Fatalf("%d buckets after the resize; want %d", got, 2*old)
	}
	for k, e := range want {
		if got, ok := tb.Load(k); !ok || got != e {
			t.Fatalf("Load(%d) = %p, %v after the resize; want %p", k, got, ok, e)
		}
	}
}

// BenchmarkTableLoad compares a hit in the table with the same hits in
// the xsync map that the cache used before (bench_test.go's floor), on
// BenchmarkGetHit's keys and stream.
func BenchmarkTableLoad(b *testing.B) {
	keys, stream := zipfStream(benchKeys)
	b.Run("floor=xsync.MapOf.Load", func(b *testing.B) { runFloor(b, keys, stream) })
	b.Run("table", func(b *testing.B) {
		tb := newTable[string, int]()
		for _, k := range keys {
			e := &entry[string, int]{key: k}
			e.hash = tb.hash(k)
			tb.LoadOrStore(e)
		}
		runStream(b, stream, func(key string) {
			if _, ok := tb.Load(key); !ok {
				b.Fatal("miss")
			}
		})
	})
}
