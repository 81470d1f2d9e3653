// Package redisbudget is a connection budget that every process of a fleet
// shares, through Redis: at every instant the fleet holds at most Max
// places (one per connection open to the server), whatever the number of
// processes, the order they start and stop in, and their crashes. It
// implements budget.Budget, so sqladapter's and redisadapter's
// Options.Budget take it.
//
// # How it holds
//
// Each process registers in Redis the places it holds, under a lease of
// Options.Lease (default 3s) that it renews every third of it. Taking a
// place is one Lua script, one round trip: it drops the holders whose lease
// expired (a crashed process's places return to the fleet at most one lease
// after its last renewal), counts the places of the others, and grants the
// place only if the fleet stays within Max. Giving one back is the same
// script with the opposite delta; a connect that finds an idle connection
// in its pool costs nothing.
//
// A process trusts its lease only until the send time of its last answered
// script plus two thirds of the lease, so it stops believing in its places
// before Redis can give them away. Past that (Redis unreachable, or this
// process cut off from it) it falls back to Options.LocalMax places: it
// stops opening connections beyond that share, asks its pools to close
// idle ones down to it, logs the switch once and counts it
// (budget.Stats.Fallbacks). Once Redis answers again it registers the
// places it holds (its count in Redis is set to them, not raised as a take
// Redis could refuse) and returns to the fleet budget; that first answer
// also holds every new place in the fleet back for two thirds of a lease,
// while the other processes, perhaps on their fallback shares too,
// register theirs. A process that starts asks Redis for its places and
// turns to its fallback share only when Redis has not answered for two
// thirds of a lease, so that a newcomer never opens connections the fleet
// does not count while Redis answers the others. The bound holds through
// a Redis outage when every process's LocalMax together stays within Max
// (LocalMax × the most processes you run ≤ Max: the default is Max/4); and
// when Redis restarts empty (or the fleet first starts) it grants no place
// for two thirds of a lease, while the live processes register the places
// they hold.
//
// What it cannot bound: a process cut off from Redis while others still
// reach it keeps the connections that are busy when its lease runs out
// until they are returned (it closes idle ones at once and opens nothing
// beyond LocalMax), while the fleet has given its places to others; the
// server may then see up to max(that process's busy connections, LocalMax)
// beyond Max, until it reaches Redis again.
//
// # Fairness
//
// Waiters of one process are served first come first served. Across
// processes, a process whose caller waits joins a queue in Redis (the
// order of first refusal) and announces its need on a pub/sub channel. A
// place is granted to a process only when it leaves room for every process
// queued ahead of it; a queued process that is granted a place while more
// of its callers wait goes to the back of the queue, so queued processes
// take turns, one place each. A release goes to this process's own first
// waiter, with no round trip, only while no other process is queued (as
// Redis last answered); otherwise it goes back to the fleet and is
// announced on the channel, so that the process whose turn it is asks for
// it at once rather than at its next retry (every Lease/10, at most 50ms).
// Every process that hears a need asks its pools to close their idle
// connections (the least recently used tenant's first; pools with a
// periodic reclaimer, go-redis's, every Reclaimer.Every while the need
// lasts) and closes
// connections put back in its pools instead of keeping them (budget.Budget's
// Contended), so that places flow to the waiter. A process whose callers
// wait without pause thus keeps no more than its turns while another
// process waits: with P processes queued, each gets about one place in P
// of those that come free.
package redisbudget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache/budget"
)

// Options configures a fleet budget.
type Options struct {
	// Client is the Redis that coordinates the fleet: a *redis.Client, or
	// a *redis.ClusterClient (the keys share one hash tag). Required. The
	// budget does not close it.
	Client redis.UniversalClient

	// Name names the budget: every process of the fleet that bounds the
	// same server uses the same Name (and Max). Its keys in Redis start
	// with "{Name}:". Required.
	Name string

	// Max is the fleet's budget, N: the most places the fleet holds at
	// once. Required, at least 1.
	Max int

	// LocalMax is the share this process keeps to while it cannot reach
	// Redis (and, when it starts, from two thirds of a lease on if Redis has
	// not answered by then). Choose it so
	// that LocalMax times the most processes you run stays within Max.
	//
	// default: 0, meaning max(1, Max/4).
	LocalMax int

	// Lease is how long Redis counts a process's places after its last
	// renewal, and so how long a crashed process's places take to return.
	// The process renews every Lease/3.
	//
	// default: 0, meaning 3s. At least 300ms.
	Lease time.Duration

	// Instance names this process in Redis (and in logs).
	//
	// default: "", a random id.
	Instance string

	// Logger receives the switches to and from the fallback share (Warn,
	// Info) and the announcements of need (Debug).
	//
	// default: nil, no logging.
	Logger *slog.Logger
}

// Budget is a fleet budget. Create it with [New]; Close it when the process
// stops using it (its places then return to the fleet at once).
type Budget struct {
	o       Options
	keys    []string // holders, counts, queue, alive, epoch
	channel string   // need announcements
	retry   time.Duration

	reclaimers budget.Reclaimers

	// opMu serialises this process's scripts, so that what Redis counts
	// for it and what it holds (leased) stay in step: one round trip at a
	// time, never under mu. It guards no field.
	opMu sync.Mutex

	mu         sync.Mutex // guards the fields below
	held       int        // places used by connections of this process
	leased     int        // places registered for this process (>= held while on the fleet budget)
	validUntil time.Time  // the lease is trusted until then
	fallback   bool       // on the LocalMax share
	returning  bool       // a renewal sent on the fallback share is in flight: no local place until it ends
	waiters    []chan struct{}
	wake       chan struct{} // closed (and replaced) to have the first waiter try again now
	fleetHeld  int
	queued     int       // other instances queued in Redis, at the last answer
	needUntil  time.Time // another instance announced a need until then
	lastNeed   time.Time // this instance's last announcement
	waits      int64
	waitNanos  int64
	renewFails int64
	fallbacks  int64
	closed     bool

	needs chan struct{}  // (1) the listener heard another process's need: the helper reclaims
	stop  chan struct{}  // closed by Close
	done  sync.WaitGroup // the renewer, the listener and the helper
}

var _ budget.Budget = (*Budget)(nil)

// New returns a fleet budget and starts its three goroutines (the lease
// renewer, the listener for other processes' announcements and the helper
// that reclaims for them), which Close stops.
// It answers at once: places are asked of Redis; if Redis does not answer
// for two thirds of a lease, the budget turns to its fallback share and
// joins the fleet when Redis does. It returns an error
// for invalid options.
func New(o Options) (*Budget, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("redisbudget: Options.Client is nil")
	case o.Name == "":
		return nil, errors.New("redisbudget: Options.Name is empty")
	case o.Max < 1:
		return nil, fmt.Errorf("redisbudget: Options.Max is %d; the budget needs at least one place", o.Max)
	case o.LocalMax < 0 || o.LocalMax > o.Max:
		return nil, fmt.Errorf("redisbudget: Options.LocalMax is %d; want 0 (the default) to Max (%d)", o.LocalMax, o.Max)
	case o.Lease != 0 && o.Lease < 300*time.Millisecond:
		return nil, fmt.Errorf("redisbudget: Options.Lease is %v; want at least 300ms", o.Lease)
	}
	if o.LocalMax == 0 {
		o.LocalMax = max(1, o.Max/4)
	}
	if o.Lease == 0 {
		o.Lease = 3 * time.Second
	}
	if o.Instance == "" {
		var b [8]byte
		rand.Read(b[:])
		o.Instance = hex.EncodeToString(b[:])
	}
	p := "{" + o.Name + "}:"
	b := &Budget{
		o:       o,
		keys:    []string{p + "holders", p + "counts", p + "queue", p + "alive", p + "epoch"},
		channel: p + "need",
		retry:   min(o.Lease/10, 50*time.Millisecond),
		// Until Redis first answers, places are asked of Redis (and
		// refused while it does not answer); the fallback share begins
		// only two thirds of a lease later, as after a lost renewal, so
		// that a process that starts while the fleet is full does not
		// open LocalMax connections Redis does not count.
		validUntil: time.Now().Add(o.Lease - o.Lease/3),
		stop:       make(chan struct{}),
		wake:       make(chan struct{}),
		needs:      make(chan struct{}, 1),
	}
	b.done.Add(3)
	go b.renewer()
	go b.listener()
	go b.helper()
	return b, nil
}

// reply is what placeScript answers.
type reply struct {
	granted    bool
	fleetHeld  int
	queued     int
	registered int
	sent       time.Time
}

// place runs placeScript with delta for this process, and on an answer
// extends the lease's trust (from the send time). mine is the places the
// process holds, registered if Redis does not know it (and in any case
// when set: a renewal). returning marks the first renewal answered after
// the fallback share. The caller holds opMu.
func (b *Budget) place(ctx context.Context, delta, mine int, waiting, served, set, returning bool) (reply, error) {
	flag := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	sent := time.Now()
	ctx, cancel := context.WithTimeout(ctx, b.o.Lease/3)
	defer cancel()
	res, err := placeScript.Run(ctx, b.o.Client, b.keys, b.o.Instance, delta, b.o.Max, b.o.Lease.Milliseconds(), mine, flag(waiting), flag(served), flag(set), flag(returning)).Int64Slice()
	if err != nil {
		return reply{}, err
	}
	if len(res) != 5 {
		return reply{}, fmt.Errorf("redisbudget: the place script answered %v", res)
	}
	r := reply{granted: res[0] == 1, fleetHeld: int(res[1]), queued: int(res[2]), registered: int(res[4]), sent: sent}
	b.mu.Lock()
	b.fleetHeld, b.queued = r.fleetHeld, r.queued
	if until := sent.Add(b.o.Lease - b.o.Lease/3); until.After(b.validUntil) {
		b.validUntil = until
	}
	b.mu.Unlock()
	return r, nil
}

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("redisbudget: budget closed")

// Acquire takes a place, as [budget.Budget.Acquire] says: on the fleet
// budget with one round trip to Redis, on the fallback share without one.
// When none is free it calls the reclaimers once, announces its need to
// the fleet, and waits, first come first served among this process's
// callers, trying again every Lease/10 (at most 50ms), as soon as one of
// this process's connections gives its place back, or when another process
// announces a place it gave back to the fleet.
func (b *Budget) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	queue := len(b.waiters) > 0
	b.mu.Unlock()
	if !queue {
		if ok, _ := b.take(ctx, false, false); ok {
			return nil
		}
	}
	return b.wait(ctx)
}

// take tries once to take a place: on the fallback share locally, on the
// fleet budget through Redis. waiting says that the caller is a waiter
// (it joins Redis's queue when refused), last that it is the only one.
func (b *Budget) take(ctx context.Context, waiting, last bool) (bool, error) {
	b.mu.Lock()
	b.checkTrustLocked(time.Now())
	if b.fallback {
		// Not while a renewal takes this process back to the fleet: Redis
		// is being told what it holds.
		ok := b.held < b.o.LocalMax && !b.returning
		if ok {
			b.held++
			b.leased++
		}
		b.mu.Unlock()
		return ok, nil
	}
	b.mu.Unlock()

	b.opMu.Lock()
	b.mu.Lock()
	if b.closed {
		// Close has run (or runs) the leave script under opMu: a place
		// taken now would register this process in Redis again.
		b.mu.Unlock()
		b.opMu.Unlock()
		return false, ErrClosed
	}
	mine := b.leased
	b.mu.Unlock()
	r, err := b.place(ctx, 1, mine, waiting, waiting && last, false, false)
	b.mu.Lock()
	if err == nil && r.granted {
		b.held++
		b.leased++
	}
	b.mu.Unlock()
	b.opMu.Unlock()
	if err != nil {
		return false, err
	}
	return r.granted, nil
}

// wait queues the caller until take succeeds for it (it is then first in
// this process's queue), a release hands it a place, or ctx ends.
func (b *Budget) wait(ctx context.Context) error {
	ch := make(chan struct{})
	b.mu.Lock()
	b.waiters = append(b.waiters, ch)
	b.waits++
	b.mu.Unlock()
	start := time.Now()
	defer func() {
		b.mu.Lock()
		b.waitNanos += int64(time.Since(start))
		b.mu.Unlock()
	}()

	b.reclaimers.Run(false)
	every := b.reclaimers.Every()
	var periodic <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		periodic = t.C
	}
	retry := time.NewTicker(b.retry)
	defer retry.Stop()
	for {
		b.mu.Lock()
		head := len(b.waiters) > 0 && b.waiters[0] == ch
		last := len(b.waiters) == 1
		closed := b.closed
		wake := b.wake
		b.mu.Unlock()
		if closed {
			b.leave(ch)
			return ErrClosed
		}
		if head {
			ok, err := b.take(ctx, true, last)
			if err == ErrClosed {
				b.leave(ch)
				return ErrClosed
			}
			if ok {
				if !b.leave(ch) {
					// A release handed this waiter a place while take
					// got one too: give one back.
					b.Release()
				}
				return nil
			}
			b.announce()
		}
		select {
		case <-ch: // a release handed this waiter its place
			return nil
		case <-wake: // a place went back to the fleet: try now
		case <-retry.C:
		case <-periodic:
			b.reclaimers.Run(true)
		case <-ctx.Done():
			if !b.leave(ch) { // handed a place meanwhile: give it back
				b.Release()
			}
			return ctx.Err()
		}
	}
}

// leave takes ch out of the waiters and reports whether it was there (not
// handed a place by a release).
func (b *Budget) leave(ch chan struct{}) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, w := range b.waiters {
		if w == ch {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// announce tells the fleet that this process waits, at most every
// Lease/10, so that the others reclaim idle connections.
func (b *Budget) announce() {
	b.mu.Lock()
	now := time.Now()
	if now.Sub(b.lastNeed) < b.retry*2 {
		b.mu.Unlock()
		return
	}
	b.lastNeed = now
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Lease/3)
	defer cancel()
	if err := b.o.Client.Publish(ctx, b.channel, "need "+b.o.Instance).Err(); err == nil {
		b.debug("announced a need")
	}
}

// wakeLocked has this process's first waiter try to take a place now,
// instead of at its next retry. The caller holds mu.
func (b *Budget) wakeLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// Release gives back a place: to the first waiter of this process (no
// round trip) when there is one and no other process waits (none queued in
// Redis at the last answer, none announced a need in the last third of a
// lease), else to the fleet. A place given to the fleet
// while other processes are queued is announced to them, so that the one
// whose turn it is takes it at once; this process's own waiters then ask
// Redis in their turn with the others.
func (b *Budget) Release() {
	b.mu.Lock()
	if len(b.waiters) > 0 && (b.fallback || b.queued == 0 && !time.Now().Before(b.needUntil)) {
		ch := b.waiters[0]
		b.waiters = b.waiters[1:]
		close(ch) // the place goes to it: held and leased stay
		b.mu.Unlock()
		return
	}
	b.held--
	if b.fallback {
		b.leased--
		b.mu.Unlock()
		return // Redis hears of it when the renewer sets the count
	}
	b.mu.Unlock()
	// leased changes under opMu on the fleet budget, so that a renewal
	// never sets Redis's count to a value this release then lowers again.
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	b.leased--
	mine := b.leased
	closed := b.closed
	b.mu.Unlock()
	if closed {
		// Close's leave script removed every place of this process from
		// Redis; telling Redis of this one would register the process
		// again (with a count no renewal corrects: the renewer has
		// stopped).
		return
	}
	// mine already counts this release: Redis's count for this process,
	// if it lost it, is mine; else its count less one.
	r, err := b.place(context.Background(), -1, mine+1, false, false, false, false)
	if err != nil {
		// Redis counts the place until the renewer reconciles: the fleet
		// holds less than Redis believes, never more.
		b.debug("release not sent: " + err.Error())
		return
	}
	b.mu.Lock()
	if len(b.waiters) > 0 {
		b.wakeLocked() // this process may be the one whose turn it is
	}
	b.mu.Unlock()
	if r.queued > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), b.o.Lease/3)
		defer cancel()
		b.o.Client.Publish(ctx, b.channel, "free "+b.o.Instance)
	}
}

// Contended reports whether a place is awaited: by a caller of this
// process, by another process (its announcement, or Redis's queue at the
// last answer), or while the fallback share is full.
func (b *Budget) Contended() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters) > 0 || time.Now().Before(b.needUntil) || b.queued > 0 || (b.fallback && b.held >= b.o.LocalMax)
}

// AddReclaimer registers r; see [budget.Budget.AddReclaimer].
func (b *Budget) AddReclaimer(r budget.Reclaimer) (remove func()) { return b.reclaimers.Add(r) }

// Stats returns the budget's figures. FleetHeld is Redis's count at its
// last answer; Leased what this process has registered there (or holds, on
// the fallback share).
func (b *Budget) Stats() budget.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return budget.Stats{
		Max:           b.o.Max,
		Held:          b.held,
		FleetHeld:     b.fleetHeld,
		Leased:        b.leased,
		Waiting:       len(b.waiters),
		WaitCount:     b.waits,
		WaitDuration:  time.Duration(b.waitNanos),
		RenewFailures: b.renewFails,
		Fallbacks:     b.fallbacks,
		Fallback:      b.fallback,
	}
}

// LocalMax returns the fallback share in effect (Options.LocalMax or its
// default).
func (b *Budget) LocalMax() int { return b.o.LocalMax }

// Instance returns this process's id in Redis.
func (b *Budget) Instance() string { return b.o.Instance }

// Close stops the budget's goroutines and removes this process from the
// fleet, so that the places Redis counts for it return at once (its
// connections should be closed by then: close the caches first). Waiting
// Acquire calls return ErrClosed. A Release after Close only counts
// locally: Redis no longer holds this process's places, and no script of
// this process runs after Close's. Close is idempotent.
func (b *Budget) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.done.Wait()
	// Under opMu, so that no script of this process runs after the leave:
	// a take or a release in flight ends first, and later ones see closed
	// and leave Redis alone.
	b.opMu.Lock()
	defer b.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Lease/3)
	defer cancel()
	return leaveScript.Run(ctx, b.o.Client, b.keys[:4], b.o.Instance).Err()
}

// checkTrustLocked switches to the fallback share when the lease is no
// longer trusted (Redis has not answered for two thirds of it).
func (b *Budget) checkTrustLocked(now time.Time) {
	if b.fallback || now.Before(b.validUntil) {
		return
	}
	b.fallback = true
	b.fallbacks++
	if b.o.Logger != nil {
		b.o.Logger.LogAttrs(context.Background(), slog.LevelWarn, "redisbudget: Redis has not answered; on the local fallback share",
			slog.String("budget", b.o.Name), slog.String("instance", b.o.Instance), slog.Int("local_max", b.o.LocalMax), slog.Int("held", b.held))
	}
}

// renewer renews the lease every Lease/3 and reconciles what Redis counts
// for this process with what it holds; it switches to the fallback share
// when renewals fail for two thirds of the lease (shedding idle
// connections down to LocalMax), and back once Redis answers. It exits at
// Close.
func (b *Budget) renewer() {
	defer b.done.Done()
	t := time.NewTicker(b.o.Lease / 3)
	defer t.Stop()
	// trust fires when the lease stops being trusted, so that the switch
	// to the fallback share (and the shedding) happens then, not at the
	// next renewal: an answer to a take may have moved it off the ticks.
	trust := time.NewTimer(time.Hour)
	defer trust.Stop()
	for {
		b.renew()
	wait:
		for {
			b.mu.Lock()
			left, fallback := time.Until(b.validUntil), b.fallback
			b.mu.Unlock()
			if fallback {
				trust.Stop()
			} else {
				trust.Reset(max(left, 0))
			}
			select {
			case <-b.stop:
				return
			case <-t.C:
				break wait
			case <-trust.C:
				b.distrust()
			}
		}
	}
}

// distrust switches to the fallback share if the lease is no longer
// trusted, and then sheds idle connections down to it.
func (b *Budget) distrust() {
	b.mu.Lock()
	was := b.fallback
	b.checkTrustLocked(time.Now())
	shed := b.fallback && !was
	b.mu.Unlock()
	if shed {
		b.shed()
	}
}

func (b *Budget) renew() {
	b.opMu.Lock()
	b.mu.Lock()
	mine := b.leased
	returning := b.fallback
	b.returning = returning
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if !returning {
		// A renewal that has not answered when the lease stops being
		// trusted has failed: the switch happens then, not when the
		// client gives up (it may retry dials for longer).
		ctx, cancel = context.WithDeadline(ctx, b.validUntil)
	}
	b.mu.Unlock()
	// Set, not add: Redis's count for this process becomes what it holds,
	// whatever it kept (a release not sent, a take whose answer was lost,
	// places taken on the fallback share).
	r, err := b.place(ctx, 0, mine, false, false, true, returning)
	cancel()
	b.opMu.Unlock()

	b.mu.Lock()
	b.returning = false
	if err != nil {
		b.renewFails++
		b.mu.Unlock()
		b.distrust()
		return
	}
	if b.fallback && returning {
		// (A renewal sent on the fleet budget and answered after the
		// switch to the fallback share set a count that places taken
		// since may exceed: the next renewal, a returning one, sets it.)
		b.fallback = false
		if b.o.Logger != nil {
			b.o.Logger.LogAttrs(context.Background(), slog.LevelInfo, "redisbudget: Redis answers again; back on the fleet budget",
				slog.String("budget", b.o.Name), slog.String("instance", b.o.Instance), slog.Int("fleet_held", r.fleetHeld))
		}
	}
	b.mu.Unlock()
}

// shed asks the pools to close idle connections until this process holds
// no more than LocalMax (or they have none idle).
func (b *Budget) shed() {
	for {
		b.mu.Lock()
		over := b.held > b.o.LocalMax
		b.mu.Unlock()
		if !over || b.reclaimers.Run(false) == 0 {
			return
		}
	}
}

// listener hears the other processes' announcements: of a need, it marks
// the budget contended for a third of a lease (pools then close the
// connections put back in them) and has the helper reclaim; of a place
// given back to the fleet, it has this process's first waiter try now. It
// exits at Close.
func (b *Budget) listener() {
	defer b.done.Done()
	for {
		ps := b.o.Client.Subscribe(context.Background(), b.channel)
		ch := ps.Channel()
	recv:
		for {
			select {
			case <-b.stop:
				ps.Close()
				return
			case m, ok := <-ch:
				if !ok {
					break recv
				}
				kind, from, _ := strings.Cut(m.Payload, " ")
				if from == b.o.Instance {
					continue
				}
				switch kind {
				case "free": // a place went back to the fleet for a queued process
					b.mu.Lock()
					if len(b.waiters) > 0 {
						b.wakeLocked()
					}
					b.mu.Unlock()
				case "need":
					b.mu.Lock()
					b.needUntil = time.Now().Add(b.o.Lease / 3)
					b.mu.Unlock()
					select {
					case b.needs <- struct{}{}:
					default: // the helper has one to handle already
					}
				}
			}
		}
		ps.Close()
		select {
		case <-b.stop:
			return
		case <-time.After(b.retry):
		}
	}
}

// helper reclaims for the other processes' waiters: at each need the
// listener hears, it calls the reclaimers once, and then the periodic ones
// every [budget.Reclaimer.Every] while the need lasts (a third of a lease
// after the last announcement), as a waiter of this process would. The
// reclaimers run on this goroutine, never on the listener's. It exits at
// Close.
func (b *Budget) helper() {
	defer b.done.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.needs:
		}
		b.reclaimers.Run(false)
		every := b.reclaimers.Every()
		if every <= 0 {
			continue
		}
		t := time.NewTicker(every)
		for on := true; on; {
			select {
			case <-b.stop:
				t.Stop()
				return
			case <-b.needs:
				b.reclaimers.Run(false)
			case <-t.C:
				b.reclaimers.Run(true)
			}
			b.mu.Lock()
			on = time.Now().Before(b.needUntil)
			b.mu.Unlock()
		}
		t.Stop()
	}
}

func (b *Budget) debug(msg string) {
	if b.o.Logger != nil {
		b.o.Logger.LogAttrs(context.Background(), slog.LevelDebug, "redisbudget: "+msg, slog.String("budget", b.o.Name), slog.String("instance", b.o.Instance))
	}
}
