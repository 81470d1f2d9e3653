package main

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// fleetInstance is one tenantserver process of TestFleetBudget.
type fleetInstance struct {
	cmd      *exec.Cmd
	addr, id string
	exited   chan error
	mu       sync.Mutex
	log      []string // lines after start
	dead     atomic.Bool
	served   atomic.Int64
}

func (in *fleetInstance) logged(re *regexp.Regexp) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, l := range in.log {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func startFleetInstance(t *testing.T, bin string, args ...string) *fleetInstance {
	t.Helper()
	in := &fleetInstance{cmd: exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...), exited: make(chan error, 1)}
	stderr, err := in.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !in.dead.Load() {
			in.cmd.Process.Kill()
			<-in.exited
		}
	})
	started := make(chan struct{})
	addrRE := regexp.MustCompile(`msg=serving addr=(\S+)`)
	idRE := regexp.MustCompile(`fleet_instance=(\S+)`)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			line := s.Text()
			in.mu.Lock()
			if m := idRE.FindStringSubmatch(line); m != nil {
				in.id = m[1]
			}
			if m := addrRE.FindStringSubmatch(line); m != nil && in.addr == "" {
				in.addr = m[1]
				close(started)
			}
			if len(in.log) < 1000 {
				in.log = append(in.log, line)
			}
			in.mu.Unlock()
		}
		in.exited <- in.cmd.Wait()
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("a tenantserver did not start within 30s")
	}
	return in
}

// startRedis starts a redis-server of the test's own on a free loopback
// port and returns its address; the test stops it.
func startRedis(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 10s")
		}
		time.Sleep(20 * time.Millisecond) // bounded polling of a real server
	}
	return cmd
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestFleetBudget runs three tenantserver processes against PostgreSQL with
// one fleet budget through a Redis of the test's own, under concurrent HTTP
// load on many tenants spread over all three. During the load one instance
// is killed with SIGKILL and replaced, every instance is then replaced in
// turn (a rolling update: the new one starts before the old one gets
// SIGTERM), and the Redis is killed and started again. Tenant connections, sampled every 100ms in pg_stat_activity, never
// exceed the fleet budget; live instances answer every request with 2xx; an
// outside connection always succeeds; the crashed instance's places return
// within the lease (3s) plus a renewal; every instance returns to the fleet
// budget after Redis comes back.
func TestFleetBudget(t *testing.T) {
	dsn := os.Getenv("RESCACHE_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("RESCACHE_POSTGRES_DSN is not set: the fleet test runs on PostgreSQL")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("RESCACHE_POSTGRES_DSN is set but redis-server is not in PATH: %v", err)
	}
	if testing.Short() {
		t.Skip("builds the command and starts a fleet")
	}
	const fleetMax, localConns = 12, 4
	tenants := 30
	if v := os.Getenv("RESCACHE_FLEET_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("RESCACHE_FLEET_TENANTS=%q", v)
		}
		tenants = n
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	admin.SetMaxOpenConns(1)
	var buf [4]byte
	crand.Read(buf[:])
	prefix := "rescache_fleet_" + hex.EncodeToString(buf[:]) + "_"
	t.Cleanup(func() { dropPostgresDatabases(t, dsn, prefix) })

	redisPort := freePort(t)
	rcmd := startRedis(t, redisPort)
	t.Cleanup(func() { rcmd.Process.Kill(); rcmd.Wait() })
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)

	bin := filepath.Join(t.TempDir(), "tenantserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	args := []string{"-postgres", dsn, "-db-prefix", prefix, "-max-tenants", "10",
		"-fleet-redis", redisAddr, "-fleet-max-conns", strconv.Itoa(fleetMax), "-fleet-local-conns", strconv.Itoa(localConns)}
	// RESCACHE_FLEET_PER_PROCESS=1 measures the same fleet with a budget
	// of fleetMax per process instead (what three instances did before the
	// fleet budget): the figures are logged, Redis is left alone, and the
	// bound is not asserted.
	perProcess := os.Getenv("RESCACHE_FLEET_PER_PROCESS") == "1"
	if perProcess {
		args = []string{"-postgres", dsn, "-db-prefix", prefix, "-max-tenants", "10", "-max-conns", strconv.Itoa(fleetMax)}
	}
	var instMu sync.Mutex
	live := []*fleetInstance{}
	for range 3 {
		live = append(live, startFleetInstance(t, bin, args...))
	}
	all := append([]*fleetInstance(nil), live...)

	ctx := context.Background()
	smp, _ := startConnSampler(ctx, admin, dsn, prefix)

	// The load: workers POST and GET notes of random tenants on random
	// live instances. An answer counts against an instance only if it was
	// alive when the request started and still is.
	client := &http.Client{Timeout: 30 * time.Second}
	var requests, non2xx atomic.Int64
	// The Redis outage, from the kill to a lease after the restart (the
	// store then grants no new place for two thirds of a lease while the
	// instances register theirs, as documented): a request of that window
	// may wait past its deadline for a place, and is counted apart.
	var outageFrom, outageTo atomic.Int64 // unix nanoseconds; 0: none yet
	var outageBad atomic.Int64
	inOutage := func(t0, t1 time.Time) bool {
		from, to := outageFrom.Load(), outageTo.Load()
		return from != 0 && t1.UnixNano() >= from && (to == 0 || t0.UnixNano() <= to)
	}
	var latMu sync.Mutex
	var latencies []time.Duration
	var firstBad atomic.Value
	loadStop := make(chan struct{})
	var load sync.WaitGroup
	for w := range 24 {
		load.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-loadStop:
					return
				default:
				}
				instMu.Lock()
				in := live[rng.IntN(len(live))]
				instMu.Unlock()
				tenant := fmt.Sprintf("t%03d", rng.IntN(tenants))
				url := "http://" + in.addr + "/t/" + tenant + "/notes"
				var resp *http.Response
				var err error
				start := time.Now()
				if rng.IntN(3) == 0 {
					resp, err = client.Post(url, "application/json", strings.NewReader(`{"body":"fleet"}`))
				} else {
					resp, err = client.Get(url)
				}
				if in.dead.Load() {
					if resp != nil {
						resp.Body.Close()
					}
					continue
				}
				requests.Add(1)
				if (err != nil || resp.StatusCode/100 != 2) && inOutage(start, time.Now()) {
					if resp != nil {
						resp.Body.Close()
					}
					outageBad.Add(1)
					continue
				}
				if err != nil {
					non2xx.Add(1)
					firstBad.CompareAndSwap(nil, err.Error())
					continue
				}
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					non2xx.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%s %s: %s", in.addr, tenant, resp.Status))
					continue
				}
				in.served.Add(1)
				latMu.Lock()
				latencies = append(latencies, time.Since(start))
				latMu.Unlock()
			}
		})
	}

	time.Sleep(3 * time.Second) // the load runs (a real fleet: no fake time)

	// A crash: SIGKILL, then a replacement.
	instMu.Lock()
	victim := live[0]
	victim.dead.Store(true)
	live = live[1:]
	instMu.Unlock()
	victim.cmd.Process.Kill()
	<-victim.exited
	crashed := time.Now()
	replacement := startFleetInstance(t, bin, args...)
	all = append(all, replacement)
	instMu.Lock()
	live = append(live, replacement)
	instMu.Unlock()
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	countsKey := "{tenantserver:" + u.Host + "}:counts" // the budget's name, as NewServer makes it
	var back time.Duration
	if !perProcess {
		for deadline := time.Now().Add(10 * time.Second); ; {
			ok, err := rc.HExists(ctx, countsKey, victim.id).Result()
			if err == nil && !ok {
				back = time.Since(crashed)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the crashed instance %s still holds places in Redis 10s after its crash", victim.id)
				break
			}
			time.Sleep(50 * time.Millisecond) // bounded polling of Redis
		}

	}
	time.Sleep(2 * time.Second)

	// A rolling update: each instance in turn gets its successor first,
	// then stops gracefully (SIGTERM), new before old. A stopped instance
	// leaves the fleet as it exits, so Redis no longer counts it.
	instMu.Lock()
	olds := append([]*fleetInstance(nil), live...)
	instMu.Unlock()
	rolled := time.Now()
	for _, old := range olds {
		successor := startFleetInstance(t, bin, args...)
		all = append(all, successor)
		instMu.Lock()
		live = append(slices.DeleteFunc(live, func(in *fleetInstance) bool { return in == old }), successor)
		instMu.Unlock()
		old.dead.Store(true) // its answers from now on do not count
		old.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-old.exited:
			if err != nil {
				t.Errorf("instance %s stopped with SIGTERM: %v; want a clean exit", old.id, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("instance %s did not stop within 30s of SIGTERM", old.id)
		}
		if !perProcess {
			if ok, err := rc.HExists(ctx, countsKey, old.id).Result(); err != nil || ok {
				t.Errorf("Redis still counts instance %s after its graceful stop (%v)", old.id, err)
			}
		}
		time.Sleep(500 * time.Millisecond) // the successor serves before the next one rolls
	}
	rollTime := time.Since(rolled)
	time.Sleep(time.Second)
	backRE := regexp.MustCompile(`back on the fleet budget`)
	fellRE := regexp.MustCompile(`on the local fallback share`)
	if !perProcess {
		// Redis dies and comes back on the same port.
		outageFrom.Store(time.Now().UnixNano())
		rcmd.Process.Kill()
		rcmd.Wait()
		// Every instance stops trusting its lease within two thirds of it
		// after its last renewal (a renewal comes every third): wait until all
		// have fallen back, then let Redis return.
		for deadline := time.Now().Add(10 * time.Second); ; {
			instMu.Lock()
			n := 0
			for _, in := range live {
				if in.logged(fellRE) {
					n++
				}
			}
			instMu.Unlock()
			if n == len(live) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d of %d instances on the fallback share 10s after Redis died", n, len(live))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // the fleet serves on the fallback shares
		rcmd = startRedis(t, redisPort)
		outageTo.Store(time.Now().Add(3 * time.Second).UnixNano()) // a lease (the default) after the restart
		for deadline := time.Now().Add(10 * time.Second); ; {
			instMu.Lock()
			n := 0
			for _, in := range live {
				if in.logged(backRE) {
					n++
				}
			}
			instMu.Unlock()
			if n == len(live) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d of %d instances back on the fleet budget 10s after Redis returned", n, len(live))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)
	close(loadStop)
	load.Wait()
	smp.stop()
	peak, samples, outsideErrs := smp.peak, smp.samples, smp.errs

	fell := 0
	for _, in := range live {
		if in.logged(fellRE) {
			fell++
		}
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))].Round(10 * time.Microsecond)
	}
	if perProcess {
		t.Logf("3 processes with a budget of %d each (no fleet budget), one crashed and replaced, %d tenants: %d requests to live instances, %d non-2xx, p50 %v p99 %v; peak tenant connections %d (%d samples); outside connection failures %d",
			fleetMax, tenants, requests.Load(), non2xx.Load(), pct(.5), pct(.99), peak, samples, len(outsideErrs))
		return
	}
	t.Logf("fleet of 3 (one crashed and replaced, a rolling update of all 3 in %v, Redis killed and restarted), fleet budget %d, local share %d, %d tenants: %d requests to live instances, %d non-2xx, p50 %v p99 %v; peak tenant connections %d (%d samples); outside connection failures %d; crashed instance's places back after %v; %d of %d instances fell back during the Redis outage; the replacement served %d requests",
		rollTime.Round(10*time.Millisecond), fleetMax, localConns, tenants, requests.Load(), non2xx.Load(), pct(.5), pct(.99), peak, samples, len(outsideErrs), back.Round(10*time.Millisecond), fell, len(live), replacement.served.Load())
	if peak > fleetMax {
		t.Errorf("pg_stat_activity showed %d tenant connections; the fleet budget is %d", peak, fleetMax)
	}
	if n := non2xx.Load(); n > 0 {
		t.Errorf("%d answers of live instances were not 2xx; first: %v", n, firstBad.Load())
	}
	t.Logf("%d answers not 2xx during the Redis outage and the lease after it (budget waits past their deadline while the store grants no new place)", outageBad.Load())
	if n, all := outageBad.Load(), requests.Load(); n*10 > all {
		t.Errorf("%d of %d answers failed during the Redis outage; want at most a tenth", n, all)
	}
	for i, err := range outsideErrs {
		if i == 5 {
			break
		}
		t.Errorf("outside connection during the load: %v", err)
	}
	if replacement.served.Load() == 0 {
		t.Error("the replacement instance served no request")
	}
	if fell != len(live) {
		t.Errorf("%d of %d instances logged the fallback during the Redis outage", fell, len(live))
	}
	if t.Failed() {
		for _, in := range live {
			in.mu.Lock()
			var warn []string
			for _, l := range in.log {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "redisbudget") {
					warn = append(warn, l)
				}
			}
			in.mu.Unlock()
			if len(warn) > 20 {
				warn = warn[:20]
			}
			t.Logf("instance %s (%s) warnings:\n%s", in.addr, in.id, strings.Join(warn, "\n"))
		}
	}
	for _, in := range all {
		if in.dead.Load() {
			continue
		}
		in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-in.exited:
			in.dead.Store(true)
			if err != nil {
				t.Errorf("instance %s: exit after SIGTERM: %v", in.addr, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("instance %s did not exit within 30s of SIGTERM", in.addr)
		}
	}
}
