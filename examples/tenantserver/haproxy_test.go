package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHaproxyConsistentHashing puts haproxy (fleet/haproxy.cfg: balance uri
// depth 2, hash-type consistent) in front of three tenantserver instances
// and calls 200 tenants three times each: every tenant is served by one
// instance, so the fleet builds each tenant's pool once (200 pools in all);
// with balance roundrobin it builds about three per tenant. Then one
// instance leaves haproxy's configuration: only its tenants move.
func TestHaproxyConsistentHashing(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		if os.Getenv("RESCACHE_POSTGRES_DSN") != "" {
			t.Fatalf("haproxy is not installed (apt-get install haproxy), and this is a run against real servers: %v", err)
		}
		t.Skip("haproxy is not installed (apt-get install haproxy)")
	}
	if testing.Short() {
		t.Skip("builds the command and starts three instances and haproxy")
	}
	const tenants = 200
	bin := filepath.Join(t.TempDir(), "tenantserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile("fleet/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}

	run := func(name, config string, servers int, sticky bool) (builds []uint64, servedBy map[string]string) {
		var ins []*fleetInstance
		env := []string{}
		for i := range servers {
			in := startFleetInstance(t, bin, "-data", t.TempDir(), "-max-tenants", "300")
			ins = append(ins, in)
			env = append(env, fmt.Sprintf("SERVER_%c=%s", 'A'+i, in.addr))
		}
		front := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		path := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		hp := exec.Command("haproxy", "-db", "-f", path)
		hp.Env = append(os.Environ(), append(env, "FRONT="+front)...)
		var hpOut strings.Builder
		hp.Stdout, hp.Stderr = &hpOut, &hpOut
		if err := hp.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { hp.Process.Kill(); hp.Wait() }()
		client := &http.Client{Timeout: 10 * time.Second}
		for deadline := time.Now().Add(10 * time.Second); ; {
			resp, err := client.Get("http://" + front + "/t/probe/notes")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: haproxy did not serve within 10s: %v\n%s", name, err, hpOut.String())
			}
			time.Sleep(20 * time.Millisecond) // bounded polling of a real server
		}
		servedBy = map[string]string{}
		for round := range 3 {
			for i := range tenants {
				tenant := fmt.Sprintf("t%03d", i)
				resp, err := client.Get("http://" + front + "/t/" + tenant + "/notes")
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s: GET %s: %s", name, tenant, resp.Status)
				}
				by := resp.Header.Get("X-Served-By")
				if round == 0 {
					servedBy[tenant] = by
				} else if servedBy[tenant] != by && sticky {
					t.Errorf("%s: tenant %s served by %s, then by %s", name, tenant, servedBy[tenant], by)
				}
			}
		}
		for _, in := range ins {
			resp, err := client.Get("http://" + in.addr + "/stats")
			if err != nil {
				t.Fatal(err)
			}
			var st struct{ Builds uint64 }
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			builds = append(builds, st.Builds)
		}
		return builds, servedBy
	}
	sum := func(xs []uint64) (n uint64) {
		for _, x := range xs {
			n += x
		}
		return n
	}

	consistent, by3 := run("consistent", string(cfg), 3, true)
	rr := strings.Replace(strings.Replace(string(cfg), "balance uri depth 2", "balance roundrobin", 1), "hash-type consistent\n", "", 1)
	roundrobin, _ := run("roundrobin", rr, 3, false)
	// One instance fewer: server c leaves the configuration.
	two := strings.Replace(string(cfg), "\tserver c \"${SERVER_C}\" check inter 1s\n", "", 1)
	_, by2 := run("consistent, 2 servers", two, 2, true)
	moved, ofC := 0, 0
	for tenant, s := range by3 {
		if s == "c" {
			ofC++
		}
		if by2[tenant] != s {
			moved++
			if s != "c" {
				t.Errorf("tenant %s moved from %s to %s when c left", tenant, s, by2[tenant])
			}
		}
	}
	t.Logf("200 tenants x 3 calls over 3 instances: pools built per instance with consistent hashing %v (%d in all), with round robin %v (%d in all); when one instance of 3 left, %d tenants moved (%.0f%%; %d were its own)",
		consistent, sum(consistent)-1, roundrobin, sum(roundrobin)-1, moved, 100*float64(moved)/tenants, ofC)
	// The sums less 1: the probe that waited for haproxy built one pool.
	if n := sum(consistent) - 1; n != tenants {
		t.Errorf("consistent hashing built %d pools for %d tenants; want each tenant once", n, tenants)
	}
	if n := sum(roundrobin) - 1; n < 2*tenants {
		t.Errorf("round robin built %d pools for %d tenants; want about 3 per tenant", n, tenants)
	}
	if moved != ofC {
		t.Errorf("%d tenants moved; want only the %d of the instance that left", moved, ofC)
	}
}
