package redisadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
)

// Op is what an announcement asks every following instance to do with a
// key: see [Announce] and [Follow].
type Op int

const (
	// OpRefresh: rebuild the key's value in the background and swap it in
	// ([rescache.Cache.Refresh]); callers keep the current value meanwhile.
	// Use it when a key's configuration changed (new credentials, a new
	// address) and the old value still works for a while.
	OpRefresh Op = iota + 1
	// OpInvalidate: drop the key now ([rescache.Cache.Invalidate]); its
	// next use builds it again. Use it when the old value must not serve
	// another request (the tenant was deleted, its credentials revoked).
	OpInvalidate
)

// String returns the name of op on the wire: "refresh" or "invalidate".
// An unknown op reads "Op(n)".
func (op Op) String() string {
	switch op {
	case OpRefresh:
		return "refresh"
	case OpInvalidate:
		return "invalidate"
	default:
		return fmt.Sprintf("Op(%d)", int(op))
	}
}

// parseOp is the inverse of Op.String for the known ops.
func parseOp(s string) (Op, bool) {
	switch s {
	case "refresh":
		return OpRefresh, true
	case "invalidate":
		return OpInvalidate, true
	}
	return 0, false
}

// Announce publishes op for key on channel, for every instance that runs
// [Follow] on that channel (this one included, if it follows). The message
// is the op's name, a colon and the key, as is: "refresh:acme",
// "invalidate:acme" (the key may contain colons; Follow splits at the
// first one). Op names are case-sensitive: "Refresh:acme" has an unknown
// op. Any client that can PUBLISH can announce, for example
// redis-cli PUBLISH rescache:tenants refresh:acme.
//
// Pub/Sub delivers a message only to the subscribers connected when it is
// published; Follow covers the messages it missed while disconnected by
// refreshing all its entries when it subscribes again. Announce after the
// change is visible to the build function (update the secret first, then
// announce), so that the rebuilds it causes read the new configuration.
func Announce(ctx context.Context, rdb redis.UniversalClient, channel string, op Op, key string) error {
	switch {
	case rdb == nil:
		return errors.New("redisadapter: announce: nil client")
	case channel == "":
		return errors.New("redisadapter: announce: empty channel")
	case op != OpRefresh && op != OpInvalidate:
		return fmt.Errorf("redisadapter: announce: unknown op %v", op)
	}
	if err := rdb.Publish(ctx, channel, op.String()+":"+key).Err(); err != nil {
		return fmt.Errorf("redisadapter: announce %v on channel %q: %w", op, channel, err)
	}
	return nil
}

// FollowOptions are the optional settings of [FollowWithOptions].
type FollowOptions[K comparable] struct {
	// Logger receives Follow's logs: at Info, each (re)subscription and
	// the refresh of all entries after a resubscription; at Warn, messages
	// that cannot be applied (unknown op, a key that parse rejects) and
	// failed refreshes; at Debug, each message applied.
	//
	// default: nil, [slog.Default].
	Logger *slog.Logger

	// KeyString formats a key for logs, like the cache's KeyString: use it
	// to redact tenant identifiers. Keys taken from a message are logged
	// as KeyString of their parsed value. Of a key that parse rejects (or
	// panics on) only its length is logged: neither its text nor parse's
	// error, which may repeat it.
	//
	// default: nil, fmt.Sprint.
	KeyString func(K) string

	// Workers is the number of refreshes Follow waits for at once. The
	// builds of the refreshes are bounded by the cache's
	// MaxConcurrentBuilds as well; Workers only bounds Follow's own
	// goroutines. Refreshes beyond it are queued, one per key: a key
	// announced again before its queued refresh started is refreshed once.
	//
	// default: 0, meaning 4.
	Workers int

	// HealthCheckInterval is the interval of go-redis's Pub/Sub health
	// check: when no message came for this long, it sends a PING and
	// reconnects if the PING fails, so that a connection that died
	// silently is noticed (a broken connection is noticed at once).
	//
	// default: 0, meaning go-redis's default of 3s.
	HealthCheckInterval time.Duration
}

// Follow subscribes to channel and applies to c each announcement made
// with [Announce], until ctx ends; it then returns ctx's error. It returns
// earlier only with a setup error (a nil argument, an empty channel). Run
// it in a goroutine of its own; it logs to [slog.Default] (see
// [FollowWithOptions] for a logger of your own).
//
// parse turns the key of a message into a K. A message whose key parse
// rejects, or whose op is unknown, is logged at Warn and skipped. The op is
// the text before the first colon, compared case-sensitively with
// "refresh" and "invalidate"; a message without a colon has an unknown op,
// even "refresh" alone, and its text is not logged (only its length), since
// it may be a key.
//
// An OpInvalidate message invalidates the key. An OpRefresh message
// refreshes the key if c holds a value for it ([rescache.Cache.Refresh],
// run by a small pool of workers: the message loop never waits for a
// build); a key that c does not hold is not built, but it is invalidated,
// so that a build in flight, which may have read the old configuration, is
// not cached and a remembered build error is forgotten.
//
// Redis Pub/Sub drops the messages published while a subscriber is
// disconnected. go-redis reconnects and subscribes again by itself; Follow
// sees the new subscription's confirmation and then treats every cached
// key as changed: it refreshes every entry of c (those [rescache.Cache.All]
// finds), through the same workers, and logs it. Messages missed during a
// Redis restart or a network break are thereby covered.
//
// Follow works on a standalone Redis, behind Sentinel and on a Redis
// Cluster, where PUBLISH reaches the subscribers of every node: it uses
// rdb's Subscribe, which on a cluster client subscribes through one node
// and moves to another if that node fails.
func Follow[K comparable, V any](ctx context.Context, rdb redis.UniversalClient, channel string, c *rescache.Cache[K, V], parse func(string) (K, error)) error {
	return FollowWithOptions(ctx, rdb, channel, c, parse, FollowOptions[K]{})
}

// FollowWithOptions is [Follow] with optional settings.
func FollowWithOptions[K comparable, V any](ctx context.Context, rdb redis.UniversalClient, channel string, c *rescache.Cache[K, V], parse func(string) (K, error), opts FollowOptions[K]) error {
	switch {
	case ctx == nil:
		return errors.New("redisadapter: follow: nil context")
	case rdb == nil:
		return errors.New("redisadapter: follow: nil client")
	case channel == "":
		return errors.New("redisadapter: follow: empty channel")
	case c == nil:
		return errors.New("redisadapter: follow: nil cache")
	case parse == nil:
		return errors.New("redisadapter: follow: nil parse function")
	case opts.Workers < 0:
		return fmt.Errorf("redisadapter: follow: negative Workers (%d)", opts.Workers)
	case opts.HealthCheckInterval < 0:
		return fmt.Errorf("redisadapter: follow: negative HealthCheckInterval (%v)", opts.HealthCheckInterval)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f := &follower[K, V]{
		c:       c,
		channel: channel,
		log:     opts.Logger,
		keyStr:  opts.KeyString,
		parseFn: parse,
		queued:  make(map[K]struct{}),
		wake:    make(chan struct{}, 1),
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.keyStr == nil {
		f.keyStr = func(k K) string { return fmt.Sprint(k) }
	}
	workers := opts.Workers
	if workers == 0 {
		workers = 4
	}
	chOpts := []redis.ChannelOption{}
	if opts.HealthCheckInterval > 0 {
		chOpts = append(chOpts, redis.WithChannelHealthCheckInterval(opts.HealthCheckInterval))
	}

	// Subscribe does not fail: if Redis is down, go-redis keeps trying,
	// and the confirmation comes once it is up.
	pubsub := rdb.Subscribe(ctx, channel)
	msgs := pubsub.ChannelWithSubscriptions(chOpts...)

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { f.work(wctx) })
	}
	defer func() {
		stopWorkers()
		wg.Wait()
		pubsub.Close()
		// go-redis's receiving goroutine closes msgs once it sees the
		// PubSub closed; until then it may be blocked sending to msgs.
		for range msgs {
		}
	}()

	subscribed := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-msgs:
			if !ok {
				// Only Close closes msgs, and only the deferred call
				// closes pubsub.
				return errors.New("redisadapter: follow: subscription closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" || m.Channel != channel {
					continue
				}
				if !subscribed {
					subscribed = true
					f.log.LogAttrs(ctx, slog.LevelInfo, "redisadapter: following channel", slog.String("channel", channel))
					continue
				}
				var keys []K
				for key := range f.c.All() {
					keys = append(keys, key)
				}
				// Logged before the refreshes are queued, so that the log
				// comes before any of their effects.
				f.log.LogAttrs(ctx, slog.LevelInfo, "redisadapter: subscribed again after a disconnection: announcements may have been missed, refreshing every cached entry",
					slog.String("channel", channel), slog.Int("entries", len(keys)))
				for _, key := range keys {
					f.enqueue(key)
				}
			case *redis.Message:
				f.apply(ctx, m.Payload)
			}
		}
	}
}

// follower applies announcements to one cache.
type follower[K comparable, V any] struct {
	c       *rescache.Cache[K, V]
	channel string
	log     *slog.Logger
	keyStr  func(K) string
	parseFn func(string) (K, error)

	mu     sync.Mutex // protects queue and queued
	queue  []K        // keys to refresh, oldest first
	queued map[K]struct{}
	wake   chan struct{} // a token when queue may be non-empty
}

// apply applies one message. Of a message it cannot apply it logs only what
// is not the key: the op's name when the message has a colon (the text of a
// message without one may be a key alone), and the length of the rest;
// never the key's text or parse's error, which may repeat it.
func (f *follower[K, V]) apply(ctx context.Context, payload string) {
	name, raw, ok := strings.Cut(payload, ":")
	if !ok {
		f.log.LogAttrs(ctx, slog.LevelWarn, "redisadapter: skipped an announcement with an unknown op (no colon)",
			slog.String("channel", f.channel), slog.Int("len", len(payload)))
		return
	}
	op, known := parseOp(name)
	if !known {
		f.log.LogAttrs(ctx, slog.LevelWarn, "redisadapter: skipped an announcement with an unknown op",
			slog.String("channel", f.channel), slog.String("op", name), slog.Int("key_len", len(raw)))
		return
	}
	key, err := f.parse(raw)
	if err != nil {
		f.log.LogAttrs(ctx, slog.LevelWarn, "redisadapter: skipped an announcement whose key does not parse",
			slog.String("channel", f.channel), slog.String("op", name), slog.Int("key_len", len(raw)))
		return
	}
	f.log.LogAttrs(ctx, slog.LevelDebug, "redisadapter: announcement", slog.String("op", name), slog.String("key", f.keyStr(key)))
	if op == OpRefresh {
		if _, found := f.c.Peek(key); found {
			f.enqueue(key)
			return
		}
	}
	f.c.Invalidate(key)
}

// parse calls the user's parse function; a panic in it is an error (not
// logged: its value may repeat the key).
func (f *follower[K, V]) parse(raw string) (key K, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("parse panicked")
		}
	}()
	return f.parseFn(raw)
}

// enqueue queues a refresh of key, unless one is queued and not started.
func (f *follower[K, V]) enqueue(key K) {
	f.mu.Lock()
	if _, ok := f.queued[key]; !ok {
		f.queued[key] = struct{}{}
		f.queue = append(f.queue, key)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued key.
func (f *follower[K, V]) next() (key K, ok, more bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return key, false, false
	}
	key = f.queue[0]
	var zero K
	f.queue[0] = zero
	f.queue = f.queue[1:]
	delete(f.queued, key)
	return key, true, len(f.queue) > 0
}

// work runs queued refreshes until ctx ends.
func (f *follower[K, V]) work(ctx context.Context) {
	for {
		key, ok, more := f.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-f.wake:
				continue
			}
		}
		if more {
			// Pass the token on, for the other workers.
			select {
			case f.wake <- struct{}{}:
			default:
			}
		}
		if _, found := f.c.Peek(key); !found {
			continue // left the cache meanwhile: its next use builds it anew
		}
		if err := f.c.Refresh(ctx, key); err != nil {
			if ctx.Err() != nil {
				return
			}
			f.log.LogAttrs(ctx, slog.LevelWarn, "redisadapter: refresh failed; the current value stays",
				slog.String("key", f.keyStr(key)), slog.Any("error", err))
		}
	}
}
