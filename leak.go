package rescache

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// Leak detection, after HikariCP's leakDetectionThreshold (the stack of the
// borrow, captured when the lease is taken, logged once when the lease is
// held too long) and Go's runtime.AddCleanup (a lease dropped without
// Release is released when the garbage collector finds it unreachable).
//
// With Options.LeakThreshold set, each lease gets a token of its own (never
// reused) and a leakTrack. The cache keeps the track in c.leaks, never the
// token, so a token that the caller drops becomes unreachable and its
// cleanup runs; the track does not point to the token.

// leakTrack is what the cache knows of one tracked lease.
type leakTrack[K comparable, V any] struct {
	c     *Cache[K, V]
	e     *entry[K, V]
	taken time.Time
	stack []uintptr // the callers of Lease or Acquire

	// done is set once, by Release (end) or by the cleanup (dropped),
	// whichever comes first.
	done atomic.Bool
	// reported is set when the lease was reported as held past the
	// threshold. Guarded by Cache.leakMu.
	reported bool
}

// newTrackedLease returns a lease on e with its own token, a leak track and
// a cleanup that releases it if the token becomes unreachable unreleased.
func (c *Cache[K, V]) newTrackedLease(e *entry[K, V]) Lease[K, V] {
	var pcs [32]uintptr
	n := runtime.Callers(4, pcs[:]) // past Callers, newTrackedLease, newLease, Lease
	tr := &leakTrack[K, V]{c: c, e: e, taken: time.Now(), stack: append([]uintptr(nil), pcs[:n]...)}
	t := &leaseToken[K, V]{c: c, e: e, track: tr}
	c.leakMu.Lock()
	c.leaks[tr] = struct{}{}
	c.leakMu.Unlock()
	runtime.AddCleanup(t, func(tr *leakTrack[K, V]) { tr.dropped() }, tr)
	return Lease[K, V]{t: t, e: e}
}

// end forgets a lease that was released.
func (tr *leakTrack[K, V]) end() {
	if tr.done.CompareAndSwap(false, true) {
		tr.c.leakMu.Lock()
		delete(tr.c.leaks, tr)
		tr.c.leakMu.Unlock()
	}
}

// dropped runs on the runtime's cleanup goroutine once the lease's token is
// unreachable. An unreleased lease is released there, counted and logged;
// the release (which may close the value) and the log go to the hook
// runner, so that no user code runs on the runtime's goroutine.
func (tr *leakTrack[K, V]) dropped() {
	if !tr.done.CompareAndSwap(false, true) {
		return // released
	}
	c := tr.c
	c.leakMu.Lock()
	delete(c.leaks, tr)
	counted := tr.reported
	c.leakMu.Unlock()
	if !counted {
		c.ctr.leaseLeaks.Add(1)
	}
	c.hooks.run(func() {
		c.reportLeak(tr, "rescache: lease dropped without Release; released by the garbage collector")
		c.releaseEntry(tr.e)
	})
}

// checkLeaks reports, once each, the leases held longer than LeakThreshold.
// The janitor calls it every tick; the logs are written by the hook runner.
func (c *Cache[K, V]) checkLeaks() {
	threshold := c.opts.LeakThreshold
	now := time.Now()
	var late []*leakTrack[K, V]
	c.leakMu.Lock()
	for tr := range c.leaks {
		if !tr.reported && now.Sub(tr.taken) >= threshold {
			tr.reported = true
			late = append(late, tr)
		}
	}
	c.leakMu.Unlock()
	if len(late) == 0 {
		return
	}
	c.ctr.leaseLeaks.Add(uint64(len(late)))
	c.hooks.run(func() {
		for _, tr := range late {
			c.reportLeak(tr, "rescache: lease held longer than LeakThreshold")
		}
	})
}

// reportLeak logs tr at Warn with its key, how long it has been held and
// where it was taken.
func (c *Cache[K, V]) reportLeak(tr *leakTrack[K, V], msg string) {
	if c.log == nil {
		return
	}
	c.log.LogAttrs(context.Background(), slog.LevelWarn, msg,
		slog.String("key", c.keyString(tr.e.key)),
		slog.Duration("held", time.Since(tr.taken)),
		slog.String("taken at", formatStack(tr.stack)))
}

// formatStack formats pcs one frame a line, as "function (file:line)".
func formatStack(pcs []uintptr) string {
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Function != "" {
			fmt.Fprintf(&b, "%s (%s:%d)\n", f.Function, f.File, f.Line)
		}
		if !more {
			break
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// leasesOut describes the leases still out after Close, for Shutdown's
// error: how many, on which keys (at most 10) and, with LeakThreshold,
// where the first ones were taken. It returns "" when none is out.
func (c *Cache[K, V]) leasesOut() string {
	const maxKeys = 10
	n := 0
	var keys []string
	seen := make(map[K]bool)
	c.mu.Lock()
	for e := range c.leasedGone {
		if l := e.word.Load() & leaseMask; l > 0 {
			n += int(l)
			if len(keys) < maxKeys && !seen[e.key] {
				seen[e.key] = true // a key rotated while leased has several values out
				keys = append(keys, c.keyString(e.key))
			}
		}
	}
	c.mu.Unlock()
	if n == 0 {
		return ""
	}
	s := fmt.Sprintf("%d leases still out, on %s", n, strings.Join(keys, ", "))
	if c.opts.LeakThreshold > 0 {
		var where []string
		c.leakMu.Lock()
		for tr := range c.leaks {
			if len(where) == maxKeys {
				break
			}
			where = append(where, fmt.Sprintf("%s taken at\n%s", c.keyString(tr.e.key), formatStack(tr.stack)))
		}
		c.leakMu.Unlock()
		s += "; " + strings.Join(where, "\n")
	}
	return s
}
