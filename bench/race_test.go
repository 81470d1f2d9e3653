package bench

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// raceLoad is a short seed load: enough concurrency for the race detector
// to see the contenders' hit and build paths interleave, small enough to
// run every contender in well under a second.
var raceLoad = contender.SeedLoad{
	Requests: 400,
	Tenants:  8,
	InFlight: 32,
	Fastest:  time.Millisecond,
	Slowest:  3 * time.Millisecond,
}

// TestContendersRace runs every timed contender (and the floor) through a
// short seed load and a short churn with evictions. Run under
// `go test -race ./bench/...`, it is what the seed table's "pass" in its
// race-detector column stands for. It also checks that every request got
// its own key's value, that a contender promising one build per key made
// exactly one per tenant, and that a leasing contender never let a value be
// closed while it was leased.
func TestContendersRace(t *testing.T) {
	for _, c := range append([]contender.Contender{contender.Floor}, contender.Timed...) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			res, err := raceLoad.Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors > 0 {
				t.Errorf("seed load: %d requests got an error or a wrong value", res.Errors)
			}
			if c.OneBuildPerKey && res.Connects != int64(raceLoad.Tenants) {
				t.Errorf("seed load: %d connects; want %d (one per tenant)", res.Connects, raceLoad.Tenants)
			}
			if res.Connects < int64(raceLoad.Tenants) {
				t.Errorf("seed load: %d connects; want at least %d", res.Connects, raceLoad.Tenants)
			}
			if c.Bounded {
				checkChurn(t, c)
			}
		})
	}
}

// checkChurn serves requests over 64 keys from a cache bounded at 8, so
// that eviction hooks and closes run concurrently with Gets.
func checkChurn(t *testing.T, c contender.Contender) {
	t.Helper()
	stream := zipfStream(tenantKeys(64), 1<<10)
	built := new(contender.Builder)
	cache := c.New(built.Build, contender.Config{MaxEntries: 8})
	u := useStream(cache, stream, 16, 20*time.Microsecond, countdown(2000))
	cache.Close()
	if e := u.errors.Load(); e > 0 {
		t.Errorf("churn: %d requests got an error or a wrong value", e)
	}
	if uac := u.usedAfterClose.Load(); c.Leases && uac > 0 {
		t.Errorf("churn: %d requests used a leased value after it was closed; want 0", uac)
	}
	if d := built.Counts.DoubleCloses.Load(); c.Name == contender.RescacheAcquire.Name && d > 0 {
		t.Errorf("churn: %d values closed twice; want 0", d)
	}
}

// naiveChildEnv makes the test binary run the naive map instead of its
// tests (see TestNaiveMapRaces).
const naiveChildEnv = "RESCACHE_BENCH_NAIVE_CHILD"

// TestNaiveMapRaces shows that the seed's unlocked map is a data race: it
// runs the naive strategy in a child process (the same test binary) and
// expects the race detector, or the runtime's own check of concurrent map
// writes, to kill it. This is why the seed table and the benchmarks never
// time it. It needs a binary built with -race.
func TestNaiveMapRaces(t *testing.T) {
	if os.Getenv(naiveChildEnv) != "" {
		res, err := raceLoad.Run(context.Background(), contender.Naive)
		t.Logf("naive map finished: %+v, %v", res, err)
		return
	}
	if !raceEnabled {
		t.Skip("needs the race detector: go test -race ./bench/...")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNaiveMapRaces$", "-test.count=1")
	cmd.Env = append(os.Environ(), naiveChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("naive map passed under the race detector; want a reported race. Output:\n%s", out)
	}
	if !strings.Contains(string(out), "DATA RACE") && !strings.Contains(string(out), "concurrent map") {
		t.Fatalf("naive map failed, but not with a race: %v. Output:\n%s", err, out)
	}
}
