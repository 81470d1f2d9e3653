// Command seedtable reproduces the seed's benchmark for every strategy and
// peer library: a burst of requests over a few tenants whose first connect
// is slow, served with a bounded number in flight. It prints one row per
// contender (median wall time, its ratio to the lower bound, connects made,
// and requests answered wrongly).
//
// A second table, over the contenders that close the values they evict,
// shows what the seed's load cannot: under churn, the share of requests
// whose value was closed while in use, and the builds; and in a burst of
// tenants on a simulated database server, the requests that failed, the
// peak of server connections without and with a connection budget, and the
// connections left open after the cache was closed. Every figure is
// measured in the run.
//
// With -svg it draws both tables into one SVG file.
//
// Usage:
//
//	go run ./bench/cmd/seedtable [-requests 300] [-tenants 4] [-inflight 60] [-runs 3] [-svg FILE] [-run REGEXP]
//	    [-closers=true] [-churn 200000] [-budget 100]
//
// Progress goes to stderr, the tables to stdout.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

func main() {
	load := contender.DefaultSeedLoad
	flag.IntVar(&load.Requests, "requests", load.Requests, "requests `n` to serve")
	flag.IntVar(&load.Tenants, "tenants", load.Tenants, "distinct tenants `n`; their connects are spread evenly from 50 to 250 ms")
	flag.IntVar(&load.InFlight, "inflight", load.InFlight, "at most `n` requests in flight")
	runs := flag.Int("runs", 3, "runs `n` per row; the table shows the median")
	svg := flag.String("svg", "", "also draw the table as an SVG bar chart into `file`")
	only := flag.String("run", "", "run only the rows whose benchmark name (e.g. otter, seed-lock) matches `regexp`")
	closers := flag.Bool("closers", true, "also measure the second table: churn and a tenant burst over the contenders that close values")
	churn := contender.DefaultChurnLoad
	flag.IntVar(&churn.Requests, "churn", churn.Requests, "churn requests `n` per run in the second table")
	budget := flag.Int("budget", 100, "the connection budget `n` of the second table's burst")
	flag.Parse()
	if err := load.Validate(); err != nil {
		fatalf("%v", err)
	}
	if *runs <= 0 {
		fatalf("runs must be positive, got %d", *runs)
	}
	burst := contender.DefaultBurstLoad
	if err := churn.Validate(); err != nil {
		fatalf("%v", err)
	}
	if *budget <= 0 {
		fatalf("budget must be positive, got %d", *budget)
	}

	match, err := regexp.Compile(*only)
	if err != nil {
		fatalf("-run: %v", err)
	}
	rows := make([]row, 0, len(contender.Timed))
	for _, c := range contender.Timed {
		if !match.MatchString(c.Name) {
			continue
		}
		r, err := measure(load, c, *runs)
		if err != nil {
			fatalf("%s: %v", c.Title, err)
		}
		rows = append(rows, r)
	}
	var crows []closerRow
	if *closers {
		for _, c := range contender.Closers {
			if !match.MatchString(c.Name) {
				continue
			}
			r, err := measureClosers(churn, burst, *budget, c, *runs)
			if err != nil {
				fatalf("%s: %v", c.Title, err)
			}
			crows = append(crows, r)
		}
	}

	// The tables go to a buffer, written to stdout with one checked write.
	var out bytes.Buffer
	writeTable(&out, load, *runs, rows)
	if len(crows) > 0 {
		out.WriteString("\n")
		writeClosers(&out, churn, burst, *budget, *runs, crows)
	}
	if _, err := os.Stdout.Write(out.Bytes()); err != nil {
		fatalf("writing the tables: %v", err)
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, drawSVG(load, *runs, rows, burst, *budget, crows), 0o644); err != nil {
			fatalf("%v", err)
		}
		progressf("wrote %s\n", *svg)
	}
}

// progressf reports progress on stderr. Progress is best effort: a failed
// write to stderr must not stop a measurement, so its error is dropped.
func progressf(format string, args ...any) {
	_, _ = fmt.Fprintf(os.Stderr, format, args...)
}

// row is one contender's medians over the runs of the seed load.
type row struct {
	c        contender.Contender
	wall     time.Duration // median wall time
	connects int64         // median connects
	errors   int64         // requests answered wrongly, summed over runs
}

// measure runs load with c runs times, reporting each run on stderr.
func measure(load contender.SeedLoad, c contender.Contender, runs int) (row, error) {
	walls := make([]time.Duration, 0, runs)
	connects := make([]int64, 0, runs)
	var errs int64
	for i := range runs {
		progressf("%-42s run %d/%d ", c.Title, i+1, runs)
		res, err := load.Run(context.Background(), c)
		if err != nil {
			return row{}, err
		}
		progressf("%8s  %d connects\n", fmtDuration(res.Wall), res.Connects)
		walls = append(walls, res.Wall)
		connects = append(connects, res.Connects)
		errs += res.Errors
	}
	return row{c: c, wall: median(walls), connects: median(connects), errors: errs}, nil
}

// median returns the middle of xs (the lower middle for an even count).
func median[T int64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// writeTable prints rows as a Markdown table, with the naive strategy as a
// footnote row that is never run.
func writeTable(w *bytes.Buffer, load contender.SeedLoad, runs int, rows []row) {
	bound := load.Slowest
	fmt.Fprintf(w, "%d requests, %d tenants, at most %d in flight; connects take %s; lower bound %s (the slowest connect); median of %s\n\n",
		load.Requests, load.Tenants, load.InFlight, connectList(load), tickLabel(bound), plural(runs, "run"))
	header := []string{"strategy", "wall time", "ratio to bound", "connects", "wrong answers"}
	cells := [][]string{}
	for _, r := range rows {
		cells = append(cells, []string{
			r.c.Title, fmtDuration(r.wall), fmtRatio(ratio(r.wall, bound)), fmt.Sprint(r.connects),
			fmt.Sprintf("%d of %d", r.errors, load.Requests*runs),
		})
	}
	cells = append(cells, []string{contender.Naive.Title + " ¹", "not run", "-", "-", "-"})
	printMarkdown(w, header, []bool{false, true, true, true, true}, cells)
	fmt.Fprintf(w, "\n%d connects is the minimum (one per tenant). Wrong answers: requests, over all runs, that got an error or another tenant's value.\n", load.Tenants)
	fmt.Fprintln(w, "¹ The seed's unlocked map is never timed: concurrent map writes crash the program")
	fmt.Fprintln(w, "  (\"fatal error: concurrent map writes\"), which TestNaiveMapRaces shows under the race detector.")
}

// connectList formats the tenants' connect times, e.g. "50, 116, 183, 250 ms".
func connectList(load contender.SeedLoad) string {
	ds := load.Connects()
	if len(ds) > 8 {
		return fmt.Sprintf("%s to %s", fmtDuration(ds[0]), fmtDuration(ds[len(ds)-1]))
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprint(d.Milliseconds())
	}
	return strings.Join(parts, ", ") + " ms"
}

// ratio returns d divided by bound.
func ratio(d, bound time.Duration) float64 {
	return float64(d) / float64(bound)
}

// fmtRatio formats a ratio to the bound: three decimals below 10, so that
// "within 2%" can be read off, one above.
func fmtRatio(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.3fx", r)
	}
	return fmt.Sprintf("%.1fx", r)
}

// fmtDuration formats d in ms below ten seconds and in s above.
func fmtDuration(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "seedtable: "+format+"\n", args...)
	os.Exit(2)
}

// plural formats n and noun, adding an s unless n is 1: "3 runs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
