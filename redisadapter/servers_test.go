package redisadapter_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// The environment variables that point the suite at real servers. Unset, the
// suite runs against miniredis.
const (
	envAddr         = "RESCACHE_REDIS_ADDR"          // host:port of a Redis server
	envClusterAddrs = "RESCACHE_REDIS_CLUSTER_ADDRS" // comma-separated seed nodes of a Redis Cluster
)

// redisServerBin is the redis-server binary the restart test runs.
const redisServerBin = "redis-server"

// runID prefixes every key and client name of this run, so that runs that
// share a real server do not see each other.
var runID = fmt.Sprintf("rescache-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)

func TestMain(m *testing.M) {
	flag.Parse()
	// go-redis logs every failed dial; the tests cause many on purpose.
	redis.SetLogger(verboseLogger{})
	code := m.Run()
	if code == 0 {
		// go-redis ends some goroutines a moment after Close (a dial in
		// flight, a pool's reconnect probe that sleeps 1s): poll.
		if err := findLeaks(5 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// verboseLogger prints the log of go-redis only under go test -v.
type verboseLogger struct{}

func (verboseLogger) Printf(_ context.Context, format string, v ...any) {
	if testing.Verbose() {
		log.Printf(format, v...)
	}
}

// findLeaks polls until no unexpected goroutine runs, or returns goleak's
// report once d has passed.
func findLeaks(d time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(d)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verifyNoLeaks fails t if goroutines started after opts' IgnoreCurrent are
// still running a few seconds after the call.
func verifyNoLeaks(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	if err := findLeaks(5*time.Second, opts...); err != nil {
		t.Errorf("goroutines leaked: %v", err)
	}
}

// waitFor polls cond every 10ms until it returns true or d passes, and then
// fails t with the message of the last call.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s: %s", d, what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fleet is where the tenants of a test live, and how their server-side
// connections are counted.
//
// Against real Redis (RESCACHE_REDIS_ADDR) every tenant is a database number
// (tenant % 16) on that server, and its clients carry a client name unique
// to the run, the test and the tenant; CLIENT LIST counts them. Against
// miniredis, which has no CLIENT LIST, a fleet made with perTenant has one
// miniredis server per tenant whose open connections are counted by the
// server itself; otherwise every tenant is a database of one miniredis.
type fleet struct {
	t      *testing.T
	real   bool
	prefix string                 // key prefix and client-name prefix of this test
	addr   string                 // the shared server, "" with per-tenant servers
	minis  []*miniredis.Miniredis // per-tenant servers, or the one shared miniredis
	admin  *redis.Client          // for CLIENT LIST, or nil
}

// newFleet returns the fleet of n tenants for t, closed at t's cleanup. It
// fails t if RESCACHE_REDIS_ADDR is set and the server does not answer.
func newFleet(t *testing.T, n int, perTenant bool) *fleet {
	t.Helper()
	f := &fleet{t: t, prefix: runID + "-" + shortName(t)}
	if addr := os.Getenv(envAddr); addr != "" {
		f.real, f.addr = true, addr
		f.admin = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := f.admin.Ping(ctx).Err(); err != nil {
			f.admin.Close()
			t.Fatalf("%s=%s is set but the server does not answer PING: %v", envAddr, addr, err)
		}
		t.Cleanup(func() {
			f.deleteKeys()
			f.admin.Close()
		})
		return f
	}
	servers := 1
	if perTenant {
		servers = n
	}
	for range servers {
		f.minis = append(f.minis, miniredis.RunT(t))
	}
	if !perTenant {
		f.addr = f.minis[0].Addr()
	}
	return f
}

// shortName is t's name made safe for a client name (no spaces).
func shortName(t *testing.T) string {
	return strings.NewReplacer(" ", "_", "/", ".").Replace(strings.TrimPrefix(t.Name(), "Test"))
}

// options returns fresh client options of tenant.
func (f *fleet) options(tenant int) *redis.Options {
	o := &redis.Options{ClientName: f.clientName(tenant)}
	switch {
	case f.real:
		o.Addr, o.DB = f.addr, tenant%16
	case len(f.minis) == 1 && f.addr != "":
		o.Addr, o.DB = f.addr, tenant%16
	default:
		o.Addr = f.minis[tenant].Addr()
	}
	return o
}

// clientName is the client name of tenant's connections.
func (f *fleet) clientName(tenant int) string {
	return f.prefix + "-t" + strconv.Itoa(tenant)
}

// key returns a key of this test and run.
func (f *fleet) key(parts ...any) string {
	var b strings.Builder
	b.WriteString(f.prefix)
	for _, p := range parts {
		fmt.Fprintf(&b, ":%v", p)
	}
	return b.String()
}

// conns returns the number of server-side connections of each tenant that
// has any.
func (f *fleet) conns() map[int]int {
	f.t.Helper()
	m := make(map[int]int)
	if !f.real {
		if f.addr != "" {
			f.t.Fatal("fleet.conns needs per-tenant servers under miniredis")
		}
		for tenant, s := range f.minis {
			if n := s.CurrentConnectionCount(); n > 0 {
				m[tenant] = n
			}
		}
		return m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	list, err := f.admin.ClientList(ctx).Result()
	if err != nil {
		f.t.Fatalf("CLIENT LIST: %v", err)
	}
	for _, name := range clientNames(list) {
		rest, ok := strings.CutPrefix(name, f.prefix+"-t")
		if !ok {
			continue
		}
		if tenant, err := strconv.Atoi(rest); err == nil {
			m[tenant]++
		}
	}
	return m
}

// clientNames returns the name= field of every line of a CLIENT LIST reply.
func clientNames(list string) []string {
	var names []string
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		for _, field := range strings.Fields(sc.Text()) {
			if name, ok := strings.CutPrefix(field, "name="); ok {
				names = append(names, name)
			}
		}
	}
	return names
}

// deleteKeys deletes the keys of this test from every database of a real
// server.
func (f *fleet) deleteKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for db := range 16 {
		c := redis.NewClient(&redis.Options{Addr: f.addr, DB: db, MaxRetries: -1})
		iter := c.Scan(ctx, 0, f.prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	}
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// redisProcess is a redis-server owned by one test.
type redisProcess struct {
	t    *testing.T
	port int
	dir  string

	mu  sync.Mutex // protects cmd
	cmd *exec.Cmd  // the running server, or nil
}

// startRedisServer starts a redis-server of its own for t on a free
// loopback port, killed at t's cleanup. It skips t when redis-server is
// not installed, unless RESCACHE_REDIS_ADDR is set (then a real server is
// expected and t fails).
func startRedisServer(t *testing.T) *redisProcess {
	t.Helper()
	if _, err := exec.LookPath(redisServerBin); err != nil {
		if os.Getenv(envAddr) != "" {
			t.Fatalf("%s is set but %s is not installed: %v", envAddr, redisServerBin, err)
		}
		t.Skipf("%s is not installed; this test needs a server it can kill (it runs whenever %s is set)", redisServerBin, envAddr)
	}
	p := &redisProcess{t: t, port: freePort(t), dir: t.TempDir()}
	t.Cleanup(p.kill)
	p.start()
	return p
}

func (p *redisProcess) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// start runs the server and waits until it answers PING.
func (p *redisProcess) start() {
	p.t.Helper()
	cmd := exec.Command(redisServerBin,
		"--port", strconv.Itoa(p.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", p.dir,
		"--logfile", p.logFile())
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", redisServerBin, err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()

	c := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	waitFor(p.t, 10*time.Second, "redis-server on "+p.addr(), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			return false, err.Error() + "; output:\n" + p.output()
		}
		return true, ""
	})
}

func (p *redisProcess) logFile() string { return filepath.Join(p.dir, "redis.log") }

// output returns the server's log.
func (p *redisProcess) output() string {
	b, _ := os.ReadFile(p.logFile())
	return string(b)
}

// kill sends SIGKILL to the server and waits for it to exit. It does
// nothing when the server is not running.
func (p *redisProcess) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
}
