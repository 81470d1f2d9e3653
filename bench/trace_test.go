package bench

import (
	"os"
	"strings"
	"testing"

	"github.com/rescache/rescache/bench/internal/trace"
)

// TestTraceReplay replays the shared traces (../shared/traces beside the
// repository, or $RESCACHE_TRACES) and the bundled ones of bench/traces
// but the two cache2k orm traces, through every policy of package trace,
// and checks that the optimum is at or above every policy in every row. It
// logs the table; `go run ./bench/cmd/tracereplay` prints it, with the orm
// traces (CI runs both). Under -race, where rescache's miss path is a
// hundred times slower, it replays only lirs-gli (6,015 accesses, 8 sizes). It fails, rather than
// skips, when the folder is missing in CI (CI is set), which lays
// ../shared beside the clone.
func TestTraceReplay(t *testing.T) {
	dir := trace.Dir("..")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("traces folder: %v (CI lays ../shared beside the clone; %s points elsewhere)", err, trace.EnvDir)
		}
		t.Skipf("no traces folder (%v): set %s to replay the traces", err, trace.EnvDir)
	}
	var rows []trace.Row
	for _, tr := range trace.Builtin {
		if raceEnabled && tr.Name != "lirs-gli" {
			continue
		}
		r, err := trace.Replay(dir, tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r...)
	}
	for _, tr := range trace.Bundled {
		if raceEnabled || strings.HasPrefix(tr.Name, "cache2k-orm") {
			continue // the orm traces (5,000,000 accesses each) take about a minute each: tracereplay only
		}
		r, err := trace.Replay(trace.BundledDir(".."), tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r...)
	}
	var b strings.Builder
	trace.WriteTable(&b, rows)
	t.Logf("hit ratios:\n%s", b.String())
	if err := trace.CheckOptimum(rows); err != nil {
		t.Error(err)
	}
}
