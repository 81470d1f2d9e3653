package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

// TestMain checks that the server leaves no goroutine behind once run has
// returned: no HTTP connection, no tenant pool, no cache goroutine.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEndToEnd starts the server on a loopback port, as main does, drives
// it with real HTTP requests for several tenants at once, checks that no
// tenant sees another's notes, reads /stats, and shuts it down. It runs on
// SQLite files, and on PostgreSQL too when RESCACHE_POSTGRES_DSN is set
// (creating its tenant databases and dropping them at the end).
func TestEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testEndToEnd(t, "-data", t.TempDir())
	})
	if dsn := os.Getenv("RESCACHE_POSTGRES_DSN"); dsn != "" {
		t.Run("postgres", func(t *testing.T) {
			var buf [4]byte
			rand.Read(buf[:])
			prefix := "rescache_e2e_" + hex.EncodeToString(buf[:]) + "_"
			t.Cleanup(func() { dropPostgresDatabases(t, dsn, prefix) })
			testEndToEnd(t, "-postgres", dsn, "-db-prefix", prefix)
		})
		t.Run("pgxpool", func(t *testing.T) {
			var buf [4]byte
			rand.Read(buf[:])
			prefix := "rescache_e2e_pgx_" + hex.EncodeToString(buf[:]) + "_"
			t.Cleanup(func() { dropPostgresDatabases(t, dsn, prefix) })
			testEndToEnd(t, "-postgres", dsn, "-db-prefix", prefix, "-driver", "pgxpool")
		})
	}
}

func testEndToEnd(t *testing.T, args ...string) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	var logs syncBuffer
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0", "-max-tenants", "3"}, args...), &logs, func(addr string) { addrCh <- addr })
	}()
	var base string
	select {
	case addr := <-addrCh:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("run() = %v before listening; logs:\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not start within 30s; logs:\n%s", logs.String())
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// Four tenants, more than -max-tenants 3, so that tenants are evicted
	// and reopened while requests run; five notes each, all at once.
	tenants := []string{"acme", "globex", "initech", "umbrella"}
	const perTenant = 5
	var wg sync.WaitGroup
	for _, tenant := range tenants {
		for i := range perTenant {
			wg.Go(func() {
				body := fmt.Sprintf(`{"body": "note %d of %s"}`, i, tenant)
				resp, err := client.Post(base+"/t/"+tenant+"/notes", "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("POST %s: %v", tenant, err)
					return
				}
				defer resp.Body.Close()
				var n note
				if resp.StatusCode != http.StatusCreated {
					b, _ := io.ReadAll(resp.Body)
					t.Errorf("POST %s: %s: %s", tenant, resp.Status, b)
				} else if err := json.NewDecoder(resp.Body).Decode(&n); err != nil || n.ID == 0 {
					t.Errorf("POST %s: note %+v, %v", tenant, n, err)
				}
			})
		}
	}
	wg.Wait()

	for _, tenant := range tenants {
		var notes []note
		getJSON(t, client, base+"/t/"+tenant+"/notes", &notes)
		if len(notes) != perTenant {
			t.Errorf("GET %s: %d notes; want %d: %+v", tenant, len(notes), perTenant, notes)
		}
		for _, n := range notes {
			if !strings.HasSuffix(n.Body, " of "+tenant) {
				t.Errorf("GET %s: holds %q, a note of another tenant", tenant, n.Body)
			}
		}
	}
	var empty []note
	getJSON(t, client, base+"/t/newcomer/notes", &empty)
	if len(empty) != 0 {
		t.Errorf("GET newcomer: %d notes; want 0", len(empty))
	}

	for _, bad := range []string{"Acme", "a.b", strings.Repeat("x", 33), "..%2fetc"} {
		resp, err := client.Get(base + "/t/" + bad + "/notes")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET tenant %q: %s; want 400 Bad Request", bad, resp.Status)
		}
	}
	resp, err := client.Post(base+"/t/acme/notes", "application/json", strings.NewReader(`{"body": ""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST an empty note: %s; want 400", resp.Status)
	}

	var st statsJSON
	getJSON(t, client, base+"/stats", &st)
	if st.Entries < 1 || st.Entries > 3 || len(st.Pools) != st.Entries {
		t.Errorf("/stats: %d entries, %d pools; want 1 to 3 (max-tenants), one pool each", st.Entries, len(st.Pools))
	}
	if st.Builds < uint64(len(tenants)+1) || st.Evictions == 0 || st.EvictionsByReason["capacity"] == 0 {
		t.Errorf("/stats: builds %d, evictions %v; want at least %d builds and capacity evictions", st.Builds, st.EvictionsByReason, len(tenants)+1)
	}
	if st.Leased != 0 {
		t.Errorf("/stats: %d leases out after the requests ended; want 0", st.Leased)
	}
	t.Logf("/stats: %+v", st)

	// /metrics says the same as /stats, in the Prometheus text format.
	metrics := scrape(t, client, base+"/metrics")
	if got := metricValue(t, metrics, "rescache_builds_total", nil); got != float64(st.Builds) {
		t.Errorf("/metrics rescache_builds_total = %v; /stats says %d", got, st.Builds)
	}
	if got := metricValue(t, metrics, "rescache_entries", nil); got != float64(st.Entries) {
		t.Errorf("/metrics rescache_entries = %v; /stats says %d", got, st.Entries)
	}
	if got := metricValue(t, metrics, "rescache_evictions_total", map[string]string{"reason": "capacity"}); got == 0 {
		t.Errorf("/metrics rescache_evictions_total{reason=capacity} = 0; want the capacity evictions")
	}
	// The pools' figures are summed over tenants: a label per tenant is
	// opt-in (promcollector.SQLPoolOptions.Tenant), as it costs a series
	// per tenant and metric.
	if fam := metrics["rescache_sql_open_connections"]; fam == nil || len(fam.GetMetric()) != 1 {
		t.Errorf("/metrics: rescache_sql_open_connections has %d series; want 1 (summed over tenants)", len(fam.GetMetric()))
	}

	// Graceful shutdown, as on SIGTERM.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v after shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run() did not return within 30s of shutdown")
	}
	if _, err := client.Get(base + "/stats"); err == nil {
		t.Errorf("the server still answers after shutdown")
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Errorf("no shutdown in the logs:\n%s", logs.String())
	}
}

func getJSON(t *testing.T, client *http.Client, url string, v any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// scrape fetches a Prometheus text exposition and parses it.
func scrape(t *testing.T, client *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: parse: %v", url, err)
	}
	return fams
}

// metricValue returns the value of the series of name whose labels include
// want (besides cache="tenants").
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	fam := fams[name]
	if fam == nil {
		t.Fatalf("/metrics has no %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["cache"] != "tenants" {
			continue
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("/metrics has no %s series with %v", name, want)
	return 0
}

// dropPostgresDatabases drops the databases whose name starts with prefix.
func dropPostgresDatabases(t *testing.T, dsn, prefix string) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer db.Close()
	db.SetMaxOpenConns(4) // the server may be shared: a few drops at a time
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix+"%")
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err == nil {
			names = append(names, n)
		}
	}
	rows.Close()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() {
			if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	wg.Wait()
}

// syncBuffer is a bytes.Buffer safe for the server's logger and the test.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
