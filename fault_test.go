package rescache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// The fault-injection suite runs random schedules of concurrent calls
// against caches whose build function, Closer, HealthCheck and OnEvict
// misbehave, while callers cancel, Invalidate and Close race with
// everything, and checks after each schedule that nothing was lost or
// leaked.
//
// A schedule is drawn from a seed: the options, the number of keys, workers
// and operations, the fault rates, each worker's operations and each
// build's behaviour. The interleaving of goroutines is the scheduler's, so a
// seed reproduces a schedule's shape, not its exact run. A failing subtest
// is named after its seed;
//
//	RESCACHE_FAULT_SEED=<seed> RESCACHE_FAULT_SCHEDULES=1 go test -race -count=20 -run FaultInjection .
//
// runs that schedule again. RESCACHE_FAULT_SCHEDULES sets the number of
// schedules (default defaultFaultSchedules); RESCACHE_FAULT_SEED sets the
// first seed (default: random, and logged).
//
// Half of the schedules run in a synctest bubble, where delays cost no real
// time and the suite can wait until every goroutine is idle to check the
// counters exactly before Shutdown; the others run on the real clock.

const defaultFaultSchedules = 500

// faultStall bounds the workers of one schedule (in fake time in a bubble),
// and faultWatchdog the whole schedule in real time; a schedule takes well
// under a second.
const (
	faultStall    = time.Minute
	faultWatchdog = 2 * time.Minute
)

var (
	errBuildFault  = errors.New("injected build failure")
	errCloseFault  = errors.New("injected close failure")
	errHealthFault = errors.New("injected health check failure")
)

const buildPanicValue = "injected build panic"

// faultValue is a value built by the suite. leases counts the leases the
// workers hold on it; the Closer fails the run if it is not zero.
type faultValue struct {
	key    int
	id     uint64
	leases atomic.Int32
	closes atomic.Int32
	nested bool // built by a nested build; read-only
}

// The kinds of fault the suite injects, counted for the log.
type faultKind int

const (
	faultBuildError faultKind = iota
	faultBuildPanic
	faultBuildBlock   // blocks until its context ends
	faultBuildOverrun // ignores its context past BuildTimeout
	faultBuildSlow
	faultBuildNested // calls Get for another key, under slot pressure
	faultCloseError
	faultClosePanic
	faultCloseSlow
	faultCallerCancel // a caller's context ends at a random point
	faultCallerGaveUp // ... and the caller got its ctx.Err()
	faultInvalidate
	faultRefresh
	faultCacheClose // Close or Shutdown racing with the workers
	faultHealthError
	faultHealthPanic
	faultEvictPanic
	faultBuildGoexit
	faultNestedRefresh // a nested Refresh of another key
	faultNestedCycle   // a nested Get, Lease or Refresh of the build's own key
	faultChurn         // schedules of many keys through a small MaxEntries with slow closes
	numFaultKinds
)

var faultNames = [numFaultKinds]string{
	"build errors", "build panics", "builds blocked until ctx end", "builds past BuildTimeout", "slow builds", "nested builds",
	"close errors", "close panics", "slow closes",
	"caller cancellations", "callers that gave up", "invalidations", "refreshes", "racing Close/Shutdown",
	"health check errors", "health check panics", "OnEvict panics",
	"build Goexits", "nested refreshes", "nested calls of their own chain", "churn schedules",
}

type faultTally struct {
	schedules, bubbles, ops atomic.Uint64
	healthChecks            atomic.Uint64
	faults                  [numFaultKinds]atomic.Uint64
}

func (ft *faultTally) String() string {
	var b strings.Builder
	var total uint64
	for k := range numFaultKinds {
		n := ft.faults[k].Load()
		if k != faultCallerGaveUp {
			total += n
		}
		fmt.Fprintf(&b, "\n  %-34s %d", faultNames[k]+":", n)
	}
	return fmt.Sprintf("%d schedules (%d in synctest bubbles), %d operations, %d health checks, %d faults injected:%s",
		ft.schedules.Load(), ft.bubbles.Load(), ft.ops.Load(), ft.healthChecks.Load(), total, b.String())
}

// faultSchedule is one random schedule. Rates are per mille.
type faultSchedule struct {
	seed   uint64
	bubble bool
	unit   time.Duration // the scale of every delay and timeout

	keys, workers, ops int // ops per worker

	opts Options[int, *faultValue] // without the functions

	fail, panic, block, overrun, slow, nested int // build behaviours
	closeErr, closePanic, closeSlow           int
	cancel                                    int  // callers whose context ends at a random point
	background                                bool // some callers use a context that never ends
	closeAfter                                int  // total operations after which a racer closes the cache; 0 = never
	shutdownRacer                             bool // the racer calls Shutdown rather than Close
	health                                    bool
	healthFail, evictPanic                    int
	goexit                                    int // builds that call runtime.Goexit
	churn                                     bool
}

func newFaultSchedule(seed uint64) *faultSchedule {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	u := 200 * time.Microsecond
	s := &faultSchedule{seed: seed, bubble: rng.IntN(2) == 0, unit: u}
	s.keys = 1 + rng.IntN(8)
	s.workers = 2 + rng.IntN(7)
	s.ops = 20 + rng.IntN(150)
	some := func(pct int, lo, hi int) time.Duration {
		if rng.IntN(100) < pct {
			return time.Duration(lo+rng.IntN(hi-lo+1)) * u
		}
		return 0
	}
	if rng.IntN(2) == 0 {
		s.opts.MaxEntries = 1 + rng.IntN(s.keys)
	}
	s.opts.IdleTimeout = some(40, 5, 50)
	s.opts.MaxLifetime = some(30, 10, 100)
	s.opts.ErrorTTL = some(40, 2, 20)
	s.opts.RefreshAfter = some(30, 3, 60)
	if lt := s.opts.MaxLifetime; lt > 0 && s.opts.RefreshAfter >= lt {
		s.opts.RefreshAfter = lt / 2
	}
	// The shorter of the two that are set.
	shorter := max(s.opts.MaxLifetime, s.opts.RefreshAfter)
	if s.opts.MaxLifetime > 0 && s.opts.RefreshAfter > 0 {
		shorter = min(s.opts.MaxLifetime, s.opts.RefreshAfter)
	}
	if shorter > 0 && rng.IntN(2) == 0 {
		s.opts.LifetimeJitter = shorter / 3
	}
	if s.opts.ErrorTTL > 0 && rng.IntN(3) == 0 {
		s.opts.MaxErrorEntries = 1 + rng.IntN(3)
	}
	s.opts.BuildTimeout = some(40, 2, 10)
	if rng.IntN(2) == 0 {
		s.opts.MaxConcurrentBuilds = 1 + rng.IntN(4)
	}
	s.background = rng.IntN(2) == 0
	s.fail = rng.IntN(300)
	s.panic = rng.IntN(150)
	s.slow = rng.IntN(400)
	s.nested = rng.IntN(200)
	// A build that blocks until its context ends needs a context that
	// ends: BuildTimeout, or callers that give up (and then Close).
	if s.opts.BuildTimeout > 0 || !s.background {
		s.block = rng.IntN(100)
	}
	if s.opts.BuildTimeout > 0 {
		s.overrun = rng.IntN(150)
	}
	s.closeErr = rng.IntN(200)
	s.closePanic = rng.IntN(100)
	s.closeSlow = rng.IntN(200)
	s.cancel = rng.IntN(400)
	if rng.IntN(2) == 0 {
		s.closeAfter = 1 + rng.IntN(s.workers*s.ops)
		s.shutdownRacer = rng.IntN(2) == 0
	}
	if rng.IntN(3) == 0 {
		s.health = true
		s.opts.HealthCheckInterval = time.Duration(2+rng.IntN(10)) * u
		s.opts.HealthCheckTimeout = time.Duration(1+rng.IntN(5)) * u
		s.healthFail = rng.IntN(600)
	}
	s.evictPanic = rng.IntN(100)
	if rng.IntN(2) == 0 {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Drawn last, so that the draws above mean what they meant before
	// there was a choice of policy.
	s.opts.Policy = Policy(rng.IntN(2))
	// Drawn after the policy, for the same reason. A Goexit in a build
	// that runs on its caller's goroutine would end that worker: only
	// where every build has a goroutine of its own.
	if s.opts.BuildTimeout > 0 || !s.background {
		s.goexit = rng.IntN(60)
	}
	if rng.IntN(4) == 0 {
		// Churn: new keys through a small MaxEntries, Closes slow.
		s.churn = true
		s.keys = 40 + rng.IntN(160)
		s.opts.MaxEntries = 1 + rng.IntN(4)
		s.closeSlow = 300 + rng.IntN(500)
	}
	return s
}

func (s *faultSchedule) String() string {
	o := &s.opts
	return fmt.Sprintf("seed=%d bubble=%v keys=%d workers=%d ops=%d MaxEntries=%d IdleTimeout=%v MaxLifetime=%v ErrorTTL=%v MaxErrorEntries=%d BuildTimeout=%v MaxConcurrentBuilds=%d HealthCheckInterval=%v RefreshAfter=%v LifetimeJitter=%v Policy=%v; per mille: fail=%d panic=%d block=%d overrun=%d slow=%d nested=%d closeErr=%d closePanic=%d closeSlow=%d cancel=%d healthFail=%d evictPanic=%d goexit=%d; background=%v closeAfter=%d shutdownRacer=%v churn=%v",
		s.seed, s.bubble, s.keys, s.workers, s.ops, o.MaxEntries, o.IdleTimeout, o.MaxLifetime, o.ErrorTTL, o.MaxErrorEntries, o.BuildTimeout, o.MaxConcurrentBuilds, o.HealthCheckInterval, o.RefreshAfter, o.LifetimeJitter, o.Policy,
		s.fail, s.panic, s.block, s.overrun, s.slow, s.nested, s.closeErr, s.closePanic, s.closeSlow, s.cancel, s.healthFail, s.evictPanic, s.goexit, s.background, s.closeAfter, s.shutdownRacer, s.churn)
}

func envInt(t testing.TB, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func TestFaultInjection(t *testing.T) {
	n := envInt(t, "RESCACHE_FAULT_SCHEDULES", defaultFaultSchedules)
	base := envInt(t, "RESCACHE_FAULT_SEED", rand.Uint64()>>1)
	t.Logf("RESCACHE_FAULT_SEED=%d RESCACHE_FAULT_SCHEDULES=%d", base, n)
	ignore := goleak.IgnoreCurrent()
	var tally faultTally
	failed := 0
	start := time.Now()
	for i := range n {
		s := newFaultSchedule(base + i)
		ok := t.Run(fmt.Sprintf("seed=%d", s.seed), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("schedule: %v", s)
					t.Logf("replay: RESCACHE_FAULT_SEED=%d RESCACHE_FAULT_SCHEDULES=1 go test -race -count=20 -run FaultInjection .", s.seed)
				}
			})
			// A hang (a caller waiting for a build that never finishes)
			// fails the run with every goroutine's stack. In a bubble,
			// synctest reports a deadlock itself.
			watchdog := time.AfterFunc(faultWatchdog, func() {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				panic(fmt.Sprintf("schedule %v did not finish in %v:\n%s", s, faultWatchdog, buf))
			})
			defer watchdog.Stop()
			if s.bubble {
				synctest.Test(t, func(t *testing.T) { newFaultRun(t, s, &tally).run() })
			} else {
				newFaultRun(t, s, &tally).run()
			}
			// No goroutine of the cache (janitor, builds, health checks)
			// outlives Shutdown. In a bubble, synctest.Test has already
			// waited for every goroutine of the bubble to exit.
			goleak.VerifyNone(t, ignore)
		})
		if !ok {
			failed++
			break // the rest would only add noise
		}
	}
	t.Logf("%v\n  failed schedules: %d; took %v", &tally, failed, time.Since(start).Round(time.Millisecond))
}

// faultRun is one schedule being run.
type faultRun struct {
	t     *testing.T
	s     *faultSchedule
	tally *faultTally
	c     *Cache[int, *faultValue]

	mu     sync.Mutex    // protects values
	values []*faultValue // every value build returned

	builds                    atomic.Uint64 // calls of build, numbering them
	succeeded, failed, panics atomic.Uint64 // as counted by build itself
	goexits                   atomic.Uint64
	inBuild                   atomic.Int64
	inHealth                  atomic.Int64  // health checks running
	closeFails                atomic.Uint64 // Closer calls that returned an error or panicked
	healthChecks              atomic.Uint64
	evictions                 atomic.Uint64 // OnEvict calls
	ops                       atomic.Uint64

	closeNow      chan struct{} // closed when the racer must close the cache
	closeReturned atomic.Bool   // the racer's Close or Shutdown returned
}

func newFaultRun(t *testing.T, s *faultSchedule, tally *faultTally) *faultRun {
	r := &faultRun{t: t, s: s, tally: tally, closeNow: make(chan struct{})}
	opts := s.opts
	opts.Close = r.close
	opts.OnEvict = r.onEvict
	if s.health {
		opts.HealthCheck = r.healthCheck
	}
	c, err := New(r.build, &opts)
	if err != nil {
		t.Fatalf("New(%v): %v", s, err)
	}
	r.c = c
	tally.schedules.Add(1)
	if s.churn {
		tally.faults[faultChurn].Add(1)
	}
	if s.bubble {
		tally.bubbles.Add(1)
	}
	return r
}

func (r *faultRun) fault(k faultKind) { r.tally.faults[k].Add(1) }

// pause sleeps up to n units: an injected delay, never a synchronisation.
func (r *faultRun) pause(rng *rand.Rand, n int) {
	if d := durN(rng, time.Duration(n)*r.s.unit); d > 0 {
		time.Sleep(d)
	}
}

// durN returns a random duration in [0, d).
func durN(rng *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rng.Int64N(int64(d)))
}

func (r *faultRun) build(ctx context.Context, key int) (*faultValue, error) {
	n := r.builds.Add(1)
	rng := rand.New(rand.NewPCG(r.s.seed, n))
	in := r.inBuild.Add(1)
	defer r.inBuild.Add(-1)
	if limit := r.s.opts.MaxConcurrentBuilds; limit > 0 && in > int64(limit) {
		r.t.Errorf("%d builds in flight; MaxConcurrentBuilds is %d", in, limit)
	}
	s := r.s
	roll := rng.IntN(1000)
	switch {
	case roll < s.fail:
		r.fault(faultBuildError)
		r.pause(rng, 2)
		r.failed.Add(1)
		return nil, fmt.Errorf("build %d: %w", n, errBuildFault)
	case roll < s.fail+s.panic:
		r.fault(faultBuildPanic)
		r.panics.Add(1)
		panic(buildPanicValue)
	case roll < s.fail+s.panic+s.block:
		r.fault(faultBuildBlock)
		<-ctx.Done()
		r.failed.Add(1)
		return nil, ctx.Err()
	case roll < s.fail+s.panic+s.block+s.overrun:
		r.fault(faultBuildOverrun)
		time.Sleep(s.opts.BuildTimeout + durN(rng, 3*s.unit) + 1)
		if rng.IntN(2) == 0 {
			r.failed.Add(1)
			return nil, fmt.Errorf("build %d, late: %w", n, errBuildFault)
		}
		// A value returned after the deadline: the cache must close it.
	case roll < s.fail+s.panic+s.block+s.overrun+s.slow:
		r.fault(faultBuildSlow)
		r.pause(rng, 5)
	case roll < s.fail+s.panic+s.block+s.overrun+s.slow+s.nested+s.goexit && roll >= s.fail+s.panic+s.block+s.overrun+s.slow+s.nested:
		r.fault(faultBuildGoexit)
		r.goexits.Add(1)
		runtime.Goexit()
	case roll < s.fail+s.panic+s.block+s.overrun+s.slow+s.nested:
		// A nested Get with the build's ctx, sometimes with a short
		// deadline of its own: while it waits the build lends its slot,
		// and it is not counted as running.
		r.fault(faultBuildNested)
		nctx := ctx
		if rng.IntN(2) == 0 {
			var cancel context.CancelFunc
			nctx, cancel = context.WithTimeout(ctx, durN(rng, 2*s.unit)+1)
			defer cancel()
		}
		// Only keys above its own: a cycle of keys built by separate
		// callers (a waits for b, b for a) waits until BuildTimeout,
		// like any mutual wait; cycles within one chain are
		// TestBuildWaitingForItselfFails's.
		r.inBuild.Add(-1)
		switch k := rng.IntN(4); {
		case k == 0:
			// Its own key, through Get, Lease or Refresh: a cycle in
			// its own chain, refused at once (a refresh's build finds
			// its key's found entry with Get and Lease, and that is
			// an answer too).
			r.fault(faultNestedCycle)
			var err error
			switch rng.IntN(3) {
			case 0:
				_, err = r.c.Get(nctx, key)
			case 1:
				var l Lease[int, *faultValue]
				l, err = r.c.Lease(nctx, key)
				l.Release()
			default:
				err = r.c.Refresh(nctx, key)
			}
			if err != nil && !errors.Is(err, ErrBuildCycle) {
				r.checkNestedErr(nctx, key, err)
			}
		case key+1 >= s.keys:
		case k == 1:
			r.fault(faultNestedRefresh)
			if err := r.c.Refresh(nctx, key+1+rng.IntN(s.keys-key-1)); err != nil {
				r.checkNestedErr(nctx, key, err)
			}
		default:
			r.c.Get(nctx, key+1+rng.IntN(s.keys-key-1)) // any answer: the key's own build may have timed out and failed
		}
		in := r.inBuild.Add(1)
		if limit := s.opts.MaxConcurrentBuilds; limit > 0 && in > int64(limit) && !r.c.closed.Load() {
			r.t.Errorf("%d builds in flight after a nested Get; MaxConcurrentBuilds is %d", in, limit)
		}
	}
	v := &faultValue{key: key, id: n}
	if run := runOf[int, *faultValue](ctx); run != nil && run.parent != nil {
		v.nested = true
	}
	r.mu.Lock()
	r.values = append(r.values, v)
	r.mu.Unlock()
	r.succeeded.Add(1)
	return v, nil
}

func (r *faultRun) close(key int, v *faultValue) error {
	if n := v.leases.Load(); n != 0 {
		r.t.Errorf("value %d of key %d closed while %d leases hold it", v.id, key, n)
	}
	if v.key != key {
		r.t.Errorf("Close(%d, value of key %d)", key, v.key)
	}
	v.closes.Add(1) // checked after Shutdown: exactly once
	rng := rand.New(rand.NewPCG(r.s.seed, v.id|1<<63))
	s := r.s
	switch roll := rng.IntN(1000); {
	case roll < s.closeSlow:
		r.fault(faultCloseSlow)
		r.pause(rng, 5)
	case roll < s.closeSlow+s.closeErr:
		r.fault(faultCloseError)
		r.closeFails.Add(1)
		return errCloseFault
	case roll < s.closeSlow+s.closeErr+s.closePanic:
		r.fault(faultClosePanic)
		r.closeFails.Add(1)
		panic("injected close panic")
	}
	return nil
}

func (r *faultRun) healthCheck(ctx context.Context, key int, v *faultValue) error {
	r.inHealth.Add(1)
	defer r.inHealth.Add(-1)
	n := r.healthChecks.Add(1)
	r.tally.healthChecks.Add(1)
	if v.closes.Load() != 0 {
		r.t.Errorf("health check of value %d of key %d after its close", v.id, key)
	}
	rng := rand.New(rand.NewPCG(r.s.seed, n|1<<62))
	switch roll := rng.IntN(1000); {
	case roll < r.s.healthFail/4:
		r.fault(faultHealthPanic)
		panic("injected health check panic")
	case roll < r.s.healthFail/2:
		r.fault(faultHealthError)
		<-ctx.Done() // hangs until its timeout
		return ctx.Err()
	case roll < r.s.healthFail:
		r.fault(faultHealthError)
		return errHealthFault
	}
	r.pause(rng, 2)
	return nil
}

func (r *faultRun) onEvict(key int, v *faultValue, reason EvictReason) {
	n := r.evictions.Add(1)
	if v == nil || v.key != key {
		r.t.Errorf("OnEvict(%d, %v, %v): not a value of that key", key, v, reason)
	}
	if reason.String() == "unknown" {
		r.t.Errorf("OnEvict with reason %d", reason)
	}
	if rng := rand.New(rand.NewPCG(r.s.seed, n|1<<61)); rng.IntN(1000) < r.s.evictPanic {
		r.fault(faultEvictPanic)
		panic("injected OnEvict panic")
	}
}

func (r *faultRun) run() {
	t, s, c := r.t, r.s, r.c
	racerDone := make(chan error, 1)
	workersDone := make(chan struct{})
	go r.racer(workersDone, racerDone)
	var wg sync.WaitGroup
	for w := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.worker(w)
		}()
	}
	// A worker stuck in a call (a build that is never finished) fails the
	// run; in a bubble the janitor's ticker keeps time going, so synctest
	// would not see a deadlock.
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	stall := time.NewTimer(faultStall)
	select {
	case <-finished:
		stall.Stop()
	case <-stall.C:
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("schedule %v: workers stuck for %v:\n%s", s, faultStall, buf))
	}
	close(workersDone)
	if err := <-racerDone; err != nil {
		t.Errorf("racing Close/Shutdown: %v", err)
	}
	r.tally.ops.Add(r.ops.Load())

	if s.bubble {
		// Every goroutine of the bubble is now blocked (the janitor on its
		// ticker, builds on their context or a delay): the counters are
		// still, and must add up before Shutdown too. Slow Closers
		// hold up the hooks queued behind them on the hook goroutine:
		// let them finish first.
		synctest.Wait()
		for c.hooks.busy() {
			time.Sleep(5 * s.unit)
			synctest.Wait()
		}
		r.checkQuiescent()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown did not return in 30s: %v", c.Stats())
	}
	r.checkCloseErr("Shutdown", err)
	r.checkFinal()
}

// racer closes the cache once the workers have made s.closeAfter
// operations, racing with them.
func (r *faultRun) racer(workersDone <-chan struct{}, done chan<- error) {
	select {
	case <-workersDone:
		done <- nil
		return
	case <-r.closeNow:
	}
	r.fault(faultCacheClose)
	var err error
	if r.s.shutdownRacer {
		err = r.c.Shutdown(context.Background())
	} else {
		err = r.c.Close()
		if again := r.c.Close(); again != err {
			r.t.Errorf("second Close = %v; want the first one's %v", again, err)
		}
	}
	r.closeReturned.Store(true)
	r.checkCloseErr("racing Close", err)
	done <- nil
}

// checkCloseErr checks that err joins injected close failures only.
func (r *faultRun) checkCloseErr(what string, err error) {
	if err == nil || errors.Is(err, errCloseFault) && !strings.Contains(err.Error(), "\n") {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			r.checkCloseErr(what, e)
		}
		return
	}
	if !strings.Contains(err.Error(), "panicked: injected close panic") {
		r.t.Errorf("%s returned %v; want only injected close failures", what, err)
	}
}

type faultLease struct {
	v       *faultValue
	release func()
	until   int // the worker's operation after which it is released
}

func (r *faultRun) worker(w int) {
	s, c := r.s, r.c
	rng := rand.New(rand.NewPCG(s.seed, uint64(w)+1<<32))
	var held []faultLease
	for i := range s.ops {
		if n := r.ops.Add(1); s.closeAfter > 0 && n == uint64(s.closeAfter) {
			close(r.closeNow)
		}
		for j := 0; j < len(held); {
			if held[j].until <= i {
				r.release(held[j])
				held[j] = held[len(held)-1]
				held = held[:len(held)-1]
				continue
			}
			j++
		}
		key := rng.IntN(s.keys)
		switch op := rng.IntN(100); {
		case op < 35:
			r.call(rng, key, false)
		case op < 65:
			if l, ok := r.call(rng, key, true); ok {
				l.until = i + rng.IntN(12)
				if rng.IntN(4) == 0 {
					r.pause(rng, 3) // hold it across a delay
				}
				held = append(held, l)
			}
		case op < 70:
			r.fault(faultInvalidate)
			c.Invalidate(key)
		case op < 75:
			r.fault(faultRefresh)
			ctx, cancel, _ := r.callerCtx(rng)
			if err := c.Refresh(ctx, key); err != nil {
				r.checkCallErr(ctx, "Refresh", key, err)
			}
			cancel()
		case op < 85:
			closed := r.closeReturned.Load()
			if v, ok := c.Peek(key); ok {
				if closed {
					r.t.Errorf("Peek(%d) found a value after Close", key)
				}
				if v.key != key {
					r.t.Errorf("Peek(%d) = value of key %d", key, v.key)
				}
			}
		case op < 90:
			c.Range(func(k int, v *faultValue) bool {
				if v.key != k {
					r.t.Errorf("Range: key %d holds value of key %d", k, v.key)
				}
				return rng.IntN(4) != 0
			})
		case op < 95:
			r.checkGauges()
		default:
			r.pause(rng, 4)
		}
	}
	for _, l := range held {
		r.release(l)
	}
}

func (r *faultRun) release(l faultLease) {
	if l.v.closes.Load() != 0 {
		r.t.Errorf("value %d of key %d closed while leased", l.v.id, l.v.key)
	}
	l.v.leases.Add(-1)
	l.release()
	if rand.IntN(8) == 0 {
		l.release() // idempotent
	}
}

// callerCtx returns the context of one Get or Acquire.
func (r *faultRun) callerCtx(rng *rand.Rand) (context.Context, context.CancelFunc, bool) {
	s := r.s
	bg := context.Background()
	switch roll := rng.IntN(1000); {
	case roll < s.cancel/4:
		ctx, cancel := context.WithCancel(bg)
		cancel() // ended before the call
		return ctx, cancel, true
	case roll < s.cancel:
		ctx, cancel := context.WithTimeout(bg, durN(rng, 4*s.unit)+1)
		return ctx, cancel, true
	case s.background && roll < 700:
		return bg, func() {}, false
	default:
		ctx, cancel := context.WithTimeout(bg, 50*s.unit)
		return ctx, cancel, false
	}
}

// call makes one Get (lease false) or Acquire and checks its outcome.
func (r *faultRun) call(rng *rand.Rand, key int, lease bool) (faultLease, bool) {
	ctx, cancel, injected := r.callerCtx(rng)
	defer cancel()
	if injected {
		r.fault(faultCallerCancel)
	}
	closed := r.closeReturned.Load()
	var (
		v       *faultValue
		release func()
		err     error
	)
	switch {
	case lease && rng.IntN(2) == 0:
		v, release, err = r.c.Acquire(ctx, key)
	case lease:
		// A Lease, ended half the time by Discard: the value is found
		// broken, and leaves if its entry still holds it.
		var l Lease[int, *faultValue]
		l, err = r.c.Lease(ctx, key)
		v, release = l.Value(), l.Release
		if rng.IntN(2) == 0 {
			release = l.Discard
		}
		if err != nil {
			release = noRelease
		}
	default:
		v, err = r.c.Get(ctx, key)
	}
	name := "Get"
	if lease {
		name = "Acquire"
	}
	if err != nil {
		if v != nil {
			r.t.Errorf("%s(%d) = %v, %v; want no value with an error", name, key, v, err)
		}
		if lease {
			release() // a no-op, and must not be nil
		}
		if closed && !errors.Is(err, ErrClosed) {
			r.t.Errorf("%s(%d) after Close = %v; want ErrClosed", name, key, err)
		}
		r.checkCallErr(ctx, name, key, err)
		return faultLease{}, false
	}
	if closed {
		r.t.Errorf("%s(%d) after Close returned a value", name, key)
	}
	if v == nil || v.key != key {
		r.t.Errorf("%s(%d) = %v; want a value of that key", name, key, v)
		if lease {
			release()
		}
		return faultLease{}, false
	}
	if !lease {
		return faultLease{}, false
	}
	v.leases.Add(1)
	if v.closes.Load() != 0 {
		r.t.Errorf("Acquire(%d) returned value %d, already closed", key, v.id)
	}
	return faultLease{v: v, release: release}, true
}

// checkCallErr checks that err is one a caller may see: an injected build
// failure or panic, a BuildTimeout, ErrClosed, or its own ctx.Err().
func (r *faultRun) checkCallErr(ctx context.Context, name string, key int, err error) {
	var pe *PanicError
	switch {
	case ctx.Err() != nil && err == ctx.Err():
		r.fault(faultCallerGaveUp)
	case errors.Is(err, errBuildFault), errors.Is(err, ErrClosed), r.s.goexit > 0 && errors.Is(err, ErrBuildGoexit):
	case errors.As(err, &pe):
		if pe.Value != buildPanicValue || pe.Key != key || len(pe.Stack) == 0 {
			r.t.Errorf("%s(%d): PanicError{Key: %v, Value: %v, %d bytes of stack}", name, key, pe.Key, pe.Value, len(pe.Stack))
		}
	case r.s.opts.BuildTimeout > 0 && errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "timed out after"):
	default:
		r.t.Errorf("%s(%d) = %v (ctx.Err() = %v); want a build's error, ErrClosed or the caller's ctx.Err()", name, key, err, ctx.Err())
	}
}

// checkGauges checks, while the workers run, what holds at every instant.
func (r *faultRun) checkGauges() {
	s := r.c.Stats()
	succeeded := r.succeeded.Load() // read after the snapshot: only grows
	if s.Closes > succeeded {
		r.t.Errorf("Stats.Closes = %d; only %d builds succeeded", s.Closes, succeeded)
	}
	if s.BuildPanics > s.BuildErrors {
		r.t.Errorf("Stats.BuildPanics = %d > BuildErrors = %d", s.BuildPanics, s.BuildErrors)
	}
	if s.Entries < 0 || s.Pending < 0 || s.Leased < 0 {
		r.t.Errorf("negative gauge in %+v", s)
	}
	if limit := r.s.opts.MaxEntries; limit > 0 {
		if n := r.c.Len(); n > limit {
			r.t.Errorf("Len() = %d; MaxEntries is %d", n, limit)
		}
		// MaxEntries bounds the values open (see room): beyond it, one
		// unit per build or close in progress, plus the values that a
		// lease, a health check or a nested build keeps past the bound.
		// Builds in flight are a margin for the snapshot's skew.
		inBuild, inHealth := r.inBuild.Load(), r.inHealth.Load()
		live, leased, nested := r.openValues()
		bound := limit + max(r.s.opts.MaxConcurrentBuilds, closeBacklog) + leased + nested + int(inHealth) + int(max(inBuild, 0))
		if live > bound {
			r.t.Errorf("%d values open (%d leased, %d built by nested builds); MaxEntries %d allows %d", live, leased, nested, limit, bound)
		}
	}
}

// openValues counts the values not yet closed, those of them leased, and
// those built by nested builds.
func (r *faultRun) openValues() (live, leased, nested int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.values {
		if v.closes.Load() == 0 {
			live++
			if v.leases.Load() > 0 {
				leased++
			}
			if v.nested {
				nested++
			}
		}
	}
	return live, leased, nested
}

// checkNestedErr checks the error of a nested call: a build's error (its
// own, or that of the build it waited for), ErrClosed, a timeout, the
// cycle, or ctx's error.
func (r *faultRun) checkNestedErr(ctx context.Context, key int, err error) {
	var pe *PanicError
	switch {
	case errors.Is(err, ErrBuildCycle), errors.Is(err, ErrBuildGoexit), ctx.Err() != nil:
	case errors.As(err, &pe) && pe.Value == buildPanicValue: // the other key's build
	default:
		r.checkCallErr(ctx, "nested call", key, err)
	}
}

// mapState counts the entries of the cache's map by state.
func (r *faultRun) mapState() (pending, found, failed int) {
	r.c.m.Range(func(_ int, e *entry[int, *faultValue]) bool {
		w := e.word.Load()
		switch {
		case w&failedBit != 0:
			failed++
		case w&valuedBit != 0:
			if w&removedBit == 0 {
				found++
			}
		default:
			pending++
		}
		return true
	})
	return
}

func (r *faultRun) liveValues() (live int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.values {
		if v.closes.Load() == 0 {
			live++
		}
	}
	return live
}

// checkQuiescent checks the counters before Shutdown, with every goroutine
// of the bubble blocked.
func (r *faultRun) checkQuiescent() {
	t, c := r.t, r.c
	s := c.Stats()
	live := r.liveValues()
	if succeeded := r.succeeded.Load(); s.Closes+uint64(live) != succeeded {
		t.Errorf("before Shutdown: Stats.Closes %d + %d live values != %d successful builds", s.Closes, live, succeeded)
	}
	if n := c.ctr.liveValues.Load(); n != int64(live) {
		t.Errorf("before Shutdown: the cache counts %d live values; %d are not closed", n, live)
	}
	if s.Leased != 0 {
		t.Errorf("before Shutdown, with every lease released: Stats.Leased = %d", s.Leased)
	}
	_, found, _ := r.mapState()
	if c.Len() != found {
		t.Errorf("before Shutdown: Len() = %d; the map holds %d found entries", c.Len(), found)
	}
	if limit := r.s.opts.MaxEntries; limit > 0 && found > limit {
		t.Errorf("before Shutdown: %d found entries; MaxEntries is %d", found, limit)
	}
	if s.Evictions != r.evictions.Load() {
		t.Errorf("before Shutdown: Stats.Evictions = %d; OnEvict was called %d times", s.Evictions, r.evictions.Load())
	}
}

// checkFinal checks the state after Shutdown returned.
func (r *faultRun) checkFinal() {
	t, c := r.t, r.c
	s := c.Stats()
	succeeded, failed, panics := r.succeeded.Load(), r.failed.Load(), r.panics.Load()
	failed += r.goexits.Load() // a Goexit is a build error
	if s.Pending != 0 {
		t.Errorf("after Shutdown: Stats.Pending = %d; want 0", s.Pending)
	}
	if pending, found, _ := r.mapState(); pending != 0 || found != 0 {
		t.Errorf("after Shutdown: the map holds %d pending and %d found entries; want none", pending, found)
	}
	if s.Builds != succeeded+failed+panics {
		t.Errorf("Stats.Builds = %d; build counted %d successes + %d failures + %d panics", s.Builds, succeeded, failed, panics)
	}
	if s.BuildErrors != failed+panics || s.BuildPanics != panics {
		t.Errorf("Stats.BuildErrors, BuildPanics = %d, %d; want %d, %d", s.BuildErrors, s.BuildPanics, failed+panics, panics)
	}
	if s.Closes != succeeded {
		t.Errorf("after Shutdown: Stats.Closes = %d; want %d, one per successful build", s.Closes, succeeded)
	}
	if s.CloseErrors != r.closeFails.Load() {
		t.Errorf("Stats.CloseErrors = %d; the Closer failed %d times", s.CloseErrors, r.closeFails.Load())
	}
	if s.Entries != 0 || c.Len() != 0 || s.Leased != 0 {
		t.Errorf("after Shutdown: Entries=%d Len()=%d Leased=%d; want 0", s.Entries, c.Len(), s.Leased)
	}
	if s.Evictions != r.evictions.Load() {
		t.Errorf("Stats.Evictions = %d; OnEvict was called %d times", s.Evictions, r.evictions.Load())
	}
	if s.HealthChecks != r.healthChecks.Load() {
		t.Errorf("Stats.HealthChecks = %d; HealthCheck was called %d times", s.HealthChecks, r.healthChecks.Load())
	}
	if n := c.ctr.liveValues.Load(); n != 0 {
		t.Errorf("after Shutdown: the cache counts %d live values", n)
	}
	if n := c.inflight.Load(); n != 0 {
		t.Errorf("after Shutdown: inflight = %d", n)
	}
	if _, err := c.Get(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Shutdown = %v; want ErrClosed", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if uint64(len(r.values)) != succeeded {
		t.Errorf("%d values recorded; %d successful builds", len(r.values), succeeded)
	}
	for _, v := range r.values {
		if n := v.closes.Load(); n != 1 {
			t.Errorf("value %d of key %d closed %d times; want 1", v.id, v.key, n)
		}
		if n := v.leases.Load(); n != 0 {
			t.Errorf("value %d of key %d: %d leases left", v.id, v.key, n)
		}
	}
}

// A build queued for a slot (MaxConcurrentBuilds) is not timed by
// BuildTimeout while it waits: it runs, under its timeout, once it gets a
// slot. Close ends the wait: its waiters get ErrClosed at once, its key is
// no longer pending, and a build that never ran is not a build error.
// (Returning from the queue once raced with the context's AfterFunc that
// finishes the entry, and could leave the key pending for ever.)
func TestBuildQueuedForSlotIsFinishedWhenItsContextEnds(t *testing.T) {
	for i := range 400 {
		synctest.Test(t, func(t *testing.T) {
			started, hold := make(chan struct{}), make(chan struct{})
			c, err := New(func(ctx context.Context, key string) (string, error) {
				if key == "hold" {
					close(started)
					<-hold // ignores its context and keeps the only slot
				}
				return key, nil
			}, &Options[string, string]{MaxConcurrentBuilds: 1, BuildTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			go c.Get(context.Background(), "hold")
			<-started
			done := make(chan error, 1)
			go func() {
				_, err := c.Get(context.Background(), "queued")
				done <- err
			}()
			time.Sleep(10 * time.Second) // far past BuildTimeout
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("iteration %d: Get of a key queued for a slot = %v before it got one; want it to wait", i, err)
			default:
			}
			closing := i%2 == 1
			if closing {
				c.Close()
				if err := <-done; !errors.Is(err, ErrClosed) {
					t.Fatalf("iteration %d: Get(queued) after Close = %v; want ErrClosed", i, err)
				}
				close(hold)
			} else {
				close(hold)
				if err := <-done; err != nil {
					t.Fatalf("iteration %d: Get(queued) once the slot is free = %v; want its value", i, err)
				}
			}
			if err := c.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if s := c.Stats(); s.Pending != 0 || s.BuildErrors != 0 || (closing && s.Builds != 1) {
				t.Fatalf("iteration %d: Stats after Shutdown: Pending %d, Builds %d, BuildErrors %d; want 0, %d, 0", i, s.Pending, s.Builds, s.BuildErrors, map[bool]int{true: 1, false: 2}[closing])
			}
		})
		if t.Failed() {
			return
		}
	}
}

// Len never exceeds MaxEntries, not even for an instant while an entry
// that overflows the cache is added.
func TestLenNeverExceedsMaxEntries(t *testing.T) {
	const limit = 4
	c := newTestCache(t, func(_ context.Context, key string) (string, error) { return key, nil }, &Options[string, string]{MaxEntries: limit})
	var stop atomic.Bool
	peak := make(chan int)
	go func() {
		worst := 0
		for !stop.Load() {
			worst = max(worst, c.Len())
		}
		peak <- worst
	}()
	for i := range 20000 {
		mustGet(t, c, strconv.Itoa(i))
	}
	stop.Store(true)
	if p := <-peak; p > limit {
		t.Fatalf("Len() reached %d; MaxEntries is %d", p, limit)
	}
}

// busy reports whether the hook runner has work queued or running.
func (h *hookRunner[K, V]) busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}
