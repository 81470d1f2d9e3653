package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache"
	"github.com/rescache/rescache/redisadapter"
	"go.uber.org/goleak"
)

// resource is the value of the caches of the Follow tests: the version of
// its key's configuration that its build read.
type resource struct {
	key     string
	version int64
	builtAt time.Time
}

// configs is the configuration the build function reads: a version per
// key, bumped by a test to stand for new credentials.
type configs struct{ m sync.Map } // key -> *atomic.Int64

func (c *configs) version(key string) *atomic.Int64 {
	v, _ := c.m.LoadOrStore(key, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// newResourceCache returns a cache whose build reads cfg, closed at the end
// of the test.
func newResourceCache(t *testing.T, cfg *configs) *rescache.Cache[string, *resource] {
	t.Helper()
	c, err := rescache.New(func(_ context.Context, key string) (*resource, error) {
		return &resource{key: key, version: cfg.version(key).Load(), builtAt: time.Now()}, nil
	}, &rescache.Options[string, *resource]{MaxConcurrentBuilds: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, c) })
	return c
}

// parseKey rejects the keys that start with "bad".
func parseKey(s string) (string, error) {
	if strings.HasPrefix(s, "bad") {
		return "", fmt.Errorf("key %q is not a tenant", s)
	}
	return s, nil
}

// logRecorder is a slog handler that keeps the messages of the records.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, b.String())
	r.mu.Unlock()
	return nil
}

// count returns the number of messages that contain s.
func (r *logRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

// Log messages of Follow the tests wait for.
const (
	logFollowing    = "redisadapter: following channel"
	logResubscribed = "redisadapter: subscribed again"
	logBadKey       = "key does not parse"
	logUnknownOp    = "unknown op"
)

// startFollow runs FollowWithOptions in a goroutine and waits until it is
// subscribed. stop cancels it and returns its error.
func startFollow(t *testing.T, rdb redis.UniversalClient, channel string, c *rescache.Cache[string, *resource], opts redisadapter.FollowOptions[string]) (logs *logRecorder, stop func() error) {
	t.Helper()
	logs = &logRecorder{}
	opts.Logger = slog.New(logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- redisadapter.FollowWithOptions(ctx, rdb, channel, c, parseKey, opts) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Follow did not return within 10s of its context's end")
		}
	})
	t.Cleanup(func() { stop() })
	waitFor(t, 10*time.Second, "Follow to subscribe", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("Follow returned early: %v", err)
		default:
		}
		return logs.count(logFollowing) == 1, logs.String()
	})
	return logs, stop
}

// waitVersion waits until c holds key's value built from version want.
func waitVersion(t *testing.T, c *rescache.Cache[string, *resource], key string, want int64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s at version %d", key, want), func() (bool, string) {
		r, ok := c.Peek(key)
		if !ok {
			return false, key + " is not cached"
		}
		return r.version == want, fmt.Sprintf("version %d", r.version)
	})
}

// TestFollow: announcements made on one client are applied by Follow on
// another: a refresh rebuilds the key from its new configuration, an
// invalidate drops it, a refresh of a key the cache does not hold builds
// nothing, and a bad key or op is logged and skipped. Against miniredis,
// RESCACHE_REDIS_ADDR and, when set, RESCACHE_REDIS_CLUSTER_ADDRS (the
// follower and the announcer then are cluster clients).
func TestFollow(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		addr := os.Getenv(envAddr)
		if addr == "" {
			addr = miniredis.RunT(t).Addr()
		}
		leaks := goleak.IgnoreCurrent()
		follower := redis.NewClient(&redis.Options{Addr: addr})
		announcer := redis.NewClient(&redis.Options{Addr: addr})
		testFollow(t, follower, announcer)
		follower.Close()
		announcer.Close()
		verifyNoLeaks(t, leaks)
	})
	t.Run("cluster", func(t *testing.T) {
		env := os.Getenv(envClusterAddrs)
		if env == "" {
			t.Skipf("%s is not set; start a cluster with testdata/cluster.sh start and set it to 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", envClusterAddrs)
		}
		addrs := strings.Split(env, ",")
		leaks := goleak.IgnoreCurrent()
		// Each client reaches the cluster through a different seed node.
		follower := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		announcer := redis.NewClusterClient(&redis.ClusterOptions{Addrs: append(addrs[1:], addrs[0])})
		pctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := follower.ForEachShard(pctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
		cancel()
		if err != nil {
			follower.Close()
			announcer.Close()
			t.Fatalf("%s=%s is set but the cluster does not answer: %v", envClusterAddrs, env, err)
		}
		testFollow(t, follower, announcer)
		follower.Close()
		announcer.Close()
		verifyNoLeaks(t, leaks)
	})
}

func testFollow(t *testing.T, follower, announcer redis.UniversalClient) {
	ctx := context.Background()
	channel := runID + "-" + shortName(t)
	cfg := &configs{}
	c := newResourceCache(t, cfg)
	for _, key := range []string{"a", "b", "c"} {
		if _, err := c.Get(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	logs, stop := startFollow(t, follower, channel, c, redisadapter.FollowOptions[string]{})
	announce := func(op redisadapter.Op, key string) {
		t.Helper()
		if err := redisadapter.Announce(ctx, announcer, channel, op, key); err != nil {
			t.Fatal(err)
		}
	}

	// New credentials for a: a refresh.
	cfg.version("a").Store(1)
	announce(redisadapter.OpRefresh, "a")
	waitVersion(t, c, "a", 1)

	// Tenant b is gone: an invalidate.
	announce(redisadapter.OpInvalidate, "b")
	waitFor(t, 5*time.Second, "b to leave the cache", func() (bool, string) {
		_, ok := c.Peek("b")
		return !ok, ""
	})

	// A refresh of a key this instance does not hold builds nothing; a bad
	// key and an unknown op are skipped.
	announce(redisadapter.OpRefresh, "absent")
	announce(redisadapter.OpRefresh, "bad-tenant")
	if err := announcer.Publish(ctx, channel, "rotate:c").Err(); err != nil {
		t.Fatal(err)
	}
	// Messages are applied in order: once c is refreshed, the three above
	// were seen.
	cfg.version("c").Store(1)
	announce(redisadapter.OpRefresh, "c")
	waitVersion(t, c, "c", 1)
	// On a cluster, messages published through different nodes may arrive
	// out of order: wait for the two skipped ones, bounded.
	waitFor(t, 5*time.Second, "the bad key and the unknown op logged", func() (bool, string) {
		return logs.count(logBadKey) == 1 && logs.count(logUnknownOp) == 1, logs.String()
	})
	if _, ok := c.Peek("absent"); ok {
		t.Error("a refresh announcement built a key the cache did not hold")
	}
	s := c.Stats() // a refresh is a build too
	if s.Builds != 5 || s.Refreshes != 2 || s.RefreshErrors != 0 {
		t.Errorf("Stats: Builds %d, Refreshes %d, RefreshErrors %d; want 5, 2, 0", s.Builds, s.Refreshes, s.RefreshErrors)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow returned %v; want context.Canceled", err)
	}
	t.Logf("logs:\n%s", logs)
}

// TestFollowSetupErrors: Follow rejects nil arguments at once, with errors
// that name the package.
func TestFollowSetupErrors(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	c := newResourceCache(t, &configs{})
	for name, err := range map[string]error{
		"nil client":    redisadapter.Follow[string](ctx, nil, "ch", c, parseKey),
		"empty channel": redisadapter.Follow(ctx, rdb, "", c, parseKey),
		"nil cache":     redisadapter.Follow(ctx, rdb, "ch", (*rescache.Cache[string, *resource])(nil), parseKey),
		"nil parse":     redisadapter.Follow(ctx, rdb, "ch", c, nil),
		"announce op":   redisadapter.Announce(ctx, rdb, "ch", redisadapter.Op(7), "k"),
		"announce nil":  redisadapter.Announce(ctx, nil, "ch", redisadapter.OpRefresh, "k"),
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "redisadapter: ") {
			t.Errorf("%s: error %v; want one that starts with \"redisadapter: \"", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := redisadapter.Follow(cctx, rdb, "ch", c, parseKey); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow with an ended context: %v; want context.Canceled", err)
	}
	if got := redisadapter.OpRefresh.String() + " " + redisadapter.OpInvalidate.String() + " " + redisadapter.Op(0).String(); got != "refresh invalidate Op(0)" {
		t.Errorf("Op names: %s", got)
	}
}

// TestFollowAcrossRestart: a redis-server owned by the test is killed under
// Follow and started again. The configuration of every key changes while
// it is down, where no announcement can reach the follower (Announce
// fails); once go-redis has subscribed again, Follow refreshes every
// entry, so that each holds a value built after the change from the new
// configuration (and no refresh ran before the restart). A later announcement is applied as before. No goroutine
// is left.
func TestFollowAcrossRestart(t *testing.T) {
	srv := startRedisServer(t)
	leaks := goleak.IgnoreCurrent()
	ctx := context.Background()
	channel := runID + "-" + shortName(t)
	follower := redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer follower.Close()
	announcer := redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer announcer.Close()

	cfg := &configs{}
	c := newResourceCache(t, cfg)
	const n = 12
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		if _, err := c.Get(ctx, keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	logs, stop := startFollow(t, follower, channel, c, redisadapter.FollowOptions[string]{
		HealthCheckInterval: 200 * time.Millisecond,
		Workers:             2,
	})

	srv.kill()
	for _, key := range keys {
		cfg.version(key).Store(1)
	}
	changed := time.Now()
	err := redisadapter.Announce(ctx, announcer, channel, redisadapter.OpRefresh, keys[0])
	if err == nil || !strings.HasPrefix(err.Error(), "redisadapter: announce refresh") {
		t.Fatalf("Announce while the server is down: %v; want an error", err)
	}
	t.Logf("Announce while down: %v", err)
	time.Sleep(300 * time.Millisecond) // let the follower see the server gone
	if s := c.Stats(); s.Refreshes != 0 {
		t.Fatalf("Stats.Refreshes = %d before the restart; want 0", s.Refreshes)
	}
	srv.start()

	waitFor(t, 15*time.Second, "every entry refreshed after the resubscription", func() (bool, string) {
		stale := 0
		for _, key := range keys {
			if r, ok := c.Peek(key); !ok || r.version != 1 || r.builtAt.Before(changed) {
				stale++
			}
		}
		return stale == 0, fmt.Sprintf("%d of %d entries stale; logs:\n%s", stale, n, logs)
	})
	if got := logs.count(logResubscribed); got != 1 {
		t.Errorf("%d logs of a resubscription; want 1; logs:\n%s", got, logs)
	}
	// A refresh is a build too.
	if s := c.Stats(); s.Refreshes != n || s.RefreshErrors != 0 || s.Builds != 2*n {
		t.Errorf("Stats: Refreshes %d, RefreshErrors %d, Builds %d; want %d, 0, %d", s.Refreshes, s.RefreshErrors, s.Builds, n, 2*n)
	}

	// Announcements work again.
	cfg.version(keys[3]).Store(2)
	if err := redisadapter.Announce(ctx, announcer, channel, redisadapter.OpRefresh, keys[3]); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, c, keys[3], 2)

	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow returned %v; want context.Canceled", err)
	}
	t.Logf("logs:\n%s", logs)
	shutdown(t, c)
	follower.Close()
	announcer.Close()
	srv.kill()
	verifyNoLeaks(t, leaks)
}

// TestFollowBadMessages: op names are case-sensitive, a message without a
// colon has an unknown op (even "refresh" alone), and nothing of a key
// that parse rejects reaches the log: not its text, not parse's error that
// repeats it, not the text of a message without a colon.
func TestFollowBadMessages(t *testing.T) {
	addr := os.Getenv(envAddr)
	if addr == "" {
		addr = miniredis.RunT(t).Addr()
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	channel := runID + "-" + shortName(t)
	cfg := &configs{}
	c := newResourceCache(t, cfg)
	if _, err := c.Get(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	logs, stop := startFollow(t, rdb, channel, c, redisadapter.FollowOptions[string]{})
	cfg.version("c").Store(1)
	// parseKey rejects "bad..." with an error that quotes it.
	for _, msg := range []string{"refresh:badSECRET-1", "SECRET-2", "refresh", "Refresh:c", "INVALIDATE:c", "refresh:bad:SECRET-3"} {
		if err := rdb.Publish(ctx, channel, msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := c.Peek("c"); !ok {
		t.Fatal("c left the cache")
	}
	// Messages are applied in order: once c is refreshed, the ones above
	// were seen.
	if err := redisadapter.Announce(ctx, rdb, channel, redisadapter.OpRefresh, "c"); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, c, "c", 1)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow returned %v; want context.Canceled", err)
	}
	if s := c.Stats(); s.Refreshes != 1 {
		t.Errorf("Stats().Refreshes = %d; want 1 (Refresh:c and INVALIDATE:c are unknown ops)", s.Refreshes)
	}
	if n := logs.count(logUnknownOp); n != 4 {
		t.Errorf("%d unknown-op logs; want 4 (SECRET-2, refresh, Refresh:c, INVALIDATE:c)\n%s", n, logs)
	}
	if n := logs.count(logBadKey); n != 2 {
		t.Errorf("%d bad-key logs; want 2\n%s", n, logs)
	}
	if n := logs.count("SECRET"); n != 0 {
		t.Errorf("%d log records show a key that parse rejected:\n%s", n, logs)
	}
	if n := logs.count("key_len=12"); n != 1 {
		t.Errorf("no record gives the rejected key's length (12)\n%s", logs)
	}
	t.Logf("logs:\n%s", logs)
}
