package rescache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// afterRemove runs on the calling goroutine what follows the removal of a
// found entry: OnEvict, then the drop of the removal's hold, and the close
// if nothing else holds the value; then the entry's unit of room is given
// back (the value is closed, or kept open by a lease or a health check,
// whose end closes it).
func (c *Cache[K, V]) afterRemove(r removal[K, V]) {
	c.notifyRemoved(r.e, r.reason)
	if r.e.unhold() {
		c.closeEntry(r.e)
	}
	c.room.free()
}

// removal is a found entry taken out of the cache under c.mu, with the hold
// that removeLocked added; its OnEvict runs after the unlock, then the hold
// is dropped (and the value closed if nothing else holds it).
type removal[K comparable, V any] struct {
	e      *entry[K, V]
	reason EvictReason
}

// hookRunner runs the OnEvict and Close hooks of the removals that the
// janitor makes (expiry) and of the entries a build evicts to make room,
// in order, on a goroutine of its own: never under a lock, never on the
// janitor (which keeps the clock) and never on the goroutine of a caller of
// another key. A slow Close delays the hooks queued after it, never a
// caller and never expiry. The hooks of a key's own removal (Invalidate,
// the release of its last lease, an expired entry found by its caller, a
// failed health check) run on that goroutine.
//
// The runner goroutine is started when work arrives and none runs, and
// exits when the queue is empty; it holds one count of Cache.inflight while
// it runs, so Shutdown waits for it.
type hookRunner[K comparable, V any] struct {
	c       *Cache[K, V]
	mu      sync.Mutex // protects queue and running
	queue   []hookJob[K, V]
	running bool // a runner goroutine is draining queue
}

// hookJob is one unit of the runner's work: the hooks of a removal, or a
// function (the report and release of a leaked lease).
type hookJob[K comparable, V any] struct {
	r  removal[K, V]
	fn func()
}

// notify queues the hooks of removals made under c.mu.
func (h *hookRunner[K, V]) notify(rs ...removal[K, V]) {
	if len(rs) == 0 {
		return
	}
	h.mu.Lock()
	for _, r := range rs {
		h.queue = append(h.queue, hookJob[K, V]{r: r})
	}
	h.startLocked()
	h.mu.Unlock()
}

// run queues fn.
func (h *hookRunner[K, V]) run(fn func()) {
	h.mu.Lock()
	h.queue = append(h.queue, hookJob[K, V]{fn: fn})
	h.startLocked()
	h.mu.Unlock()
}

func (h *hookRunner[K, V]) startLocked() {
	if !h.running {
		h.running = true
		h.c.inflight.Add(1)
		go h.drain()
	}
}

// drain runs the queued jobs, then exits.
func (h *hookRunner[K, V]) drain() {
	defer h.c.inflightDone()
	for {
		h.mu.Lock()
		if len(h.queue) == 0 {
			h.running = false
			h.queue = nil
			h.mu.Unlock()
			return
		}
		j := h.queue[0]
		h.queue[0] = hookJob[K, V]{}
		h.queue = h.queue[1:]
		h.mu.Unlock()
		if j.fn != nil {
			j.fn()
		} else {
			h.c.afterRemove(j.r)
		}
	}
}

// closeEntry closes the value of the removed entry e, whose last lease or
// hold was just dropped, and forgets it among the entries removed while
// leased (see leasesOut).
func (c *Cache[K, V]) closeEntry(e *entry[K, V]) {
	c.mu.Lock()
	delete(c.leasedGone, e)
	c.mu.Unlock()
	c.closeValue(e.key, e.val, true)
}

// closeValue closes a value with the Closer hook. It is called exactly once
// per value build returned, outside every lock, and releases the value's
// count of c.inflight. With late, an error after Close is kept for Shutdown
// (before the count is released, so Shutdown cannot miss it).
func (c *Cache[K, V]) closeValue(key K, v V, late bool) error {
	defer c.inflightDone()
	c.ctr.liveValues.Add(-1)
	c.ctr.closes.Add(1)
	start := time.Now()
	err := c.callClose(key, v)
	if err != nil {
		c.ctr.closeErrors.Add(1)
		c.warn("close failed", key, err)
		if late && c.closed.Load() {
			c.mu.Lock()
			c.lateErrs = append(c.lateErrs, err)
			c.mu.Unlock()
		}
	}
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: closed",
			slog.String("key", c.keyString(key)), slog.Duration("duration", time.Since(start)), slog.Any("error", err))
	}
	return err
}

func (c *Cache[K, V]) callClose(key K, v V) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = c.recovered("Close", key, r)
		}
	}()
	if c.opts.Close != nil {
		return c.opts.Close(key, v)
	}
	if cl, ok := any(v).(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// notifyRemoved logs the removal of e and calls OnEvict.
func (c *Cache[K, V]) notifyRemoved(e *entry[K, V], reason EvictReason) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "rescache: evicted",
			slog.String("key", c.keyString(e.key)), slog.String("reason", reason.String()))
	}
	if c.opts.OnEvict != nil {
		c.callOnEvict(e, reason)
	}
}

func (c *Cache[K, V]) callOnEvict(e *entry[K, V], reason EvictReason) {
	defer func() {
		if r := recover(); r != nil {
			c.warn("OnEvict panicked", e.key, c.recovered("OnEvict", e.key, r))
		}
	}()
	c.opts.OnEvict(e.key, e.val, reason)
}

// inflightDone drops one count of c.inflight and signals Shutdown when it reaches
// zero after Close.
func (c *Cache[K, V]) inflightDone() {
	if c.inflight.Add(-1) == 0 && c.closed.Load() {
		c.drainOnce.Do(func() { close(c.drained) })
	}
}

// Close closes the cache: afterwards Get, Lease, Acquire and Refresh return [ErrClosed],
// pending builds are cancelled (their callers receive ErrClosed), idle
// values are closed now, on the goroutine that calls Close, after their
// OnEvict, and leased ones at their release; the janitor stops. Close
// returns the errors of the closes it made, joined. It is idempotent: later
// and concurrent calls wait for the first and return its error.
func (c *Cache[K, V]) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

// close does the work of Close, once.
func (c *Cache[K, V]) close() error {
	c.mu.Lock()
	c.closed.Store(true) // under c.mu: finish checks it there before caching a value
	c.cancel()
	if c.janitorOff != nil {
		close(c.janitorOff)
	}
	removed := make([]removal[K, V], 0, c.Len())
	for _, h := range append(c.unparkedLocked(), &c.parked) {
		for len(*h) > 0 {
			removed = append(removed, c.removeLocked((*h)[0], EvictClosed))
		}
	}
	if c.errs != nil {
		c.errs.Purge() // calls deleteIfSame for each
	}
	c.mu.Unlock()

	// Every OnEvict first, then the closes, so that a slow Closer does not
	// delay the other entries' OnEvict.
	for _, r := range removed {
		c.notifyRemoved(r.e, r.reason)
	}
	var errs []error
	for _, r := range removed {
		if r.e.unhold() {
			if err := c.closeValue(r.e.key, r.e.val, false); err != nil {
				errs = append(errs, err)
			}
		}
		c.room.free() // as afterRemove does
	}
	if c.inflight.Load() == 0 {
		c.drainOnce.Do(func() { close(c.drained) })
	}
	return errors.Join(errs...)
}

// Shutdown closes the cache like Close, then waits until every value built
// has been closed (leased values are closed when their leases are released)
// and every goroutine the cache started has exited, or until ctx ends. It
// returns the close errors joined (including those of values closed after
// Close returned), or, if ctx ended first, ctx's error; when leases are
// still out then, the error (which matches ctx's with errors.Is) says how
// many leases, on which keys (each named once, at most 10, through
// KeyString) and, with
// LeakThreshold, where they were taken.
func (c *Cache[K, V]) Shutdown(ctx context.Context) error {
	err := c.Close()
	select {
	case <-c.drained:
	case <-ctx.Done():
		if out := c.leasesOut(); out != "" {
			return fmt.Errorf("rescache: shutdown: %s: %w", out, ctx.Err())
		}
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lateErrs) > 0 {
		return errors.Join(append([]error{err}, c.lateErrs...)...)
	}
	return err
}
