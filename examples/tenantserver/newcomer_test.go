package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newcomerBudget is the budget TestNewcomerLoad gives the server, through
// -conn-headroom: the local PostgreSQL may be shared with other test runs,
// so the test leaves them the rest of max_connections.
const newcomerBudget = 30

// TestNewcomerLoad is the load a new user tries first, on PostgreSQL
// (RESCACHE_POSTGRES_DSN): it builds the command and starts it with the
// default flags (the budget derived from the server; the headroom leaves
// newcomerBudget connections to the tenants), then, over real HTTP, 200
// tenants, 8 at a time, each with 10 POSTs at concurrency 5 and then 20
// GETs at concurrency 10. Every answer must be 2xx; the tenants'
// connections, sampled every 100ms in pg_stat_activity, never exceed the
// budget; a new outside connection succeeds at every sample; after SIGTERM
// no tenant connection is left.
//
// RESCACHE_NEWCOMER_ARGS replaces -conn-headroom with other flags, to
// measure the load with another budget or none ("-max-conns -1"): the
// figures are logged, and the assertions then say what the budget
// prevented.
func TestNewcomerLoad(t *testing.T) {
	dsn := os.Getenv("RESCACHE_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("RESCACHE_POSTGRES_DSN is not set: the newcomer load runs on PostgreSQL")
	}
	if testing.Short() {
		t.Skip("builds the command and creates 200 databases")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	admin.SetMaxOpenConns(1)
	ctx := context.Background()
	var maxConns, reserved, used int
	err = admin.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')`).Scan(&maxConns, &reserved, &used)
	if err != nil {
		t.Fatalf("%v (is RESCACHE_POSTGRES_DSN reachable?)", err)
	}
	args := []string{"-conn-headroom", strconv.Itoa(maxConns - reserved - newcomerBudget)}
	if extra := os.Getenv("RESCACHE_NEWCOMER_ARGS"); extra != "" {
		args = strings.Fields(extra)
	} else if free := maxConns - reserved - used; free < newcomerBudget+4 {
		t.Fatalf("PostgreSQL has %d free connections; the test needs %d", free, newcomerBudget+4)
	}

	var buf [4]byte
	rand.Read(buf[:])
	prefix := "rescache_newcomer_" + hex.EncodeToString(buf[:]) + "_"
	t.Cleanup(func() { dropPostgresDatabases(t, dsn, prefix) })

	dir := t.TempDir()
	bin := filepath.Join(dir, "tenantserver")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-postgres", dsn, "-db-prefix", prefix}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1<<16) // the server must never block on its log
	exited := make(chan error, 1)
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	addrRE := regexp.MustCompile(`msg=serving addr=(\S+)`)
	budgetRE := regexp.MustCompile(`msg="connection budget" max_conns=(\S+)`)
	var addr, budgetLine string
	budget := -1
	for timeout := time.After(30 * time.Second); addr == ""; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the server exited before serving: %v", <-exited)
			}
			if m := budgetRE.FindStringSubmatch(line); m != nil {
				budgetLine = line
				if n, err := strconv.Atoi(m[1]); err == nil {
					budget = n
				}
			}
			if m := addrRE.FindStringSubmatch(line); m != nil {
				addr = m[1]
			}
		case <-timeout:
			t.Fatal("the server did not start within 30s")
		}
	}
	t.Logf("server: %s", budgetLine)
	if os.Getenv("RESCACHE_NEWCOMER_ARGS") == "" && budget != newcomerBudget {
		t.Fatalf("the server printed %q; want a derived budget of %d", budgetLine, newcomerBudget)
	}
	var logTail []string // the server's log during the load, for a failure
	var logMu sync.Mutex
	go func() {
		for line := range lines {
			logMu.Lock()
			if len(logTail) < 200 {
				logTail = append(logTail, line)
			}
			logMu.Unlock()
		}
	}()

	// The sampler: tenant connections every 100ms, and a fresh outside
	// connection at each sample.
	smp, countConns := startConnSampler(ctx, admin, dsn, prefix)

	res := newcomerLoad(t, "http://"+addr)
	smp.stop()
	peak, samples, outsideErrs := smp.peak, smp.samples, smp.errs

	slices.Sort(res.latencies)
	pct := func(p float64) time.Duration { return res.latencies[int(p*float64(len(res.latencies)-1))] }
	t.Logf("newcomer load, %s: %d requests, %d non-2xx, peak tenant connections %d (%d samples), outside connection failures %d, latency p50 %v p99 %v, took %v",
		strings.Join(args, " "), len(res.latencies), res.non2xx, peak, samples, len(outsideErrs), pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), res.took.Round(time.Second))
	if res.non2xx > 0 {
		t.Errorf("%d of %d answers were not 2xx; first: %s", res.non2xx, len(res.latencies), res.first)
		logMu.Lock()
		t.Logf("server log (first lines):\n%s", strings.Join(logTail, "\n"))
		logMu.Unlock()
	}
	if budget > 0 && peak > budget {
		t.Errorf("pg_stat_activity showed %d tenant connections; want at most the budget, %d", peak, budget)
	}
	for i, err := range outsideErrs {
		if i == 5 {
			t.Errorf("... %d outside connection failures in all", len(outsideErrs))
			break
		}
		t.Errorf("outside connection during the load: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not exit within 30s of SIGTERM")
	}
	// A backend ends a moment after its client has gone: poll briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := countConns()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d tenant connections 10s after the server exited; want 0", n)
			break
		}
		time.Sleep(50 * time.Millisecond) // bounded polling of the server
	}
}

// newcomerResult is what newcomerLoad measured.
type newcomerResult struct {
	latencies []time.Duration
	non2xx    int
	first     string // the first non-2xx answer
	took      time.Duration
}

// newcomerLoad runs the load of TestNewcomerLoad against base.
func newcomerLoad(t *testing.T, base string) newcomerResult {
	t.Helper()
	const tenants, atATime = 200, 8
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex // protects res
	var res newcomerResult
	record := func(d time.Duration, code int, body string) {
		mu.Lock()
		defer mu.Unlock()
		res.latencies = append(res.latencies, d)
		if code/100 != 2 {
			if res.non2xx == 0 {
				res.first = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
			}
			res.non2xx++
		}
	}
	request := func(method, url, body string) {
		start := time.Now()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			panic(err)
		}
		if method == "POST" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			record(time.Since(start), 0, err.Error())
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		record(time.Since(start), resp.StatusCode, string(b))
	}
	// n requests with at most c at once.
	batch := func(n, c int, f func(i int)) {
		var wg sync.WaitGroup
		for w := range c {
			wg.Go(func() {
				for i := w; i < n; i += c {
					f(i)
				}
			})
		}
		wg.Wait()
	}
	start := time.Now()
	slots := make(chan struct{}, atATime)
	var wg sync.WaitGroup
	for i := range tenants {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			url := fmt.Sprintf("%s/t/n%03d/notes", base, i)
			batch(10, 5, func(j int) { request("POST", url, fmt.Sprintf(`{"body": "note %d"}`, j)) })
			batch(20, 10, func(int) { request("GET", url, "") })
		})
	}
	wg.Wait()
	res.took = time.Since(start)
	return res
}

// outsideConnect opens a fresh connection to the server of dsn, as another
// client (psql, a migration) would, and closes it.
func outsideConnect(ctx context.Context, dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return db.PingContext(cctx)
}

// connSampler counts the tenant connections (databases named prefix...)
// in pg_stat_activity every 100ms, and opens a fresh outside connection at
// each sample, until stop.
type connSampler struct {
	stopc   chan struct{}
	wg      sync.WaitGroup
	peak    int
	samples int
	errs    []error // failed counts and refused outside connections
}

// startConnSampler starts a sampler; countConns counts once, outside
// connects once.
func startConnSampler(ctx context.Context, admin *sql.DB, dsn, prefix string) (s *connSampler, countConns func() (int, error)) {
	countConns = func() (int, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var n int
		err := admin.QueryRowContext(cctx, "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE $1", prefix+"%").Scan(&n)
		return n, err
	}
	s = &connSampler{stopc: make(chan struct{})}
	s.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
			n, err := countConns()
			if err != nil {
				s.errs = append(s.errs, fmt.Errorf("counting connections: %w", err))
				continue
			}
			s.samples++
			s.peak = max(s.peak, n)
			if err := outsideConnect(ctx, dsn); err != nil {
				s.errs = append(s.errs, err)
			}
		}
	})
	return s, countConns
}

// stop stops the sampler; its figures may be read afterwards.
func (s *connSampler) stop() {
	close(s.stopc)
	s.wg.Wait()
}
