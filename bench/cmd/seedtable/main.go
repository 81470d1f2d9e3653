// Command seedtable reproduces the seed's benchmark for every strategy and
// peer library: a burst of requests over a few tenants whose first connect
// is slow, served with a bounded number in flight. It prints one row per
// contender (median wall time, its ratio to the lower bound, connects made,
// and what the race test says of it), and with -svg draws the same table as
// a bar chart.
//
// Usage:
//
//	go run ./bench/cmd/seedtable [-requests 300] [-tenants 4] [-inflight 60] [-runs 3] [-svg FILE] [-run REGEXP]
//
// Progress goes to stderr, the table to stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	flag.Parse()
	if err := load.Validate(); err != nil {
		fatalf("%v", err)
	}
	if *runs <= 0 {
		fatalf("runs must be positive, got %d", *runs)
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
		r, err := measure(load, c, *runs, os.Stderr)
		if err != nil {
			fatalf("%s: %v", c.Title, err)
		}
		rows = append(rows, r)
	}
	writeTable(os.Stdout, load, *runs, rows)
	if *svg != "" {
		if err := os.WriteFile(*svg, drawSVG(load, *runs, rows), 0o644); err != nil {
			fatalf("%v", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *svg)
	}
}

// row is one contender's medians over the runs.
type row struct {
	c        contender.Contender
	wall     time.Duration // median wall time
	connects int64         // median connects
	errors   int64         // requests answered wrongly, summed over runs
}

// measure runs load with c runs times, reporting each run on progress.
func measure(load contender.SeedLoad, c contender.Contender, runs int, progress io.Writer) (row, error) {
	walls := make([]time.Duration, 0, runs)
	connects := make([]int64, 0, runs)
	var errs int64
	for i := range runs {
		fmt.Fprintf(progress, "%-42s run %d/%d ", c.Title, i+1, runs)
		res, err := load.Run(context.Background(), c)
		if err != nil {
			return row{}, err
		}
		fmt.Fprintf(progress, "%8s  %d connects\n", fmtDuration(res.Wall), res.Connects)
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

// raceStatus is what the test suite shows of c under the race detector.
func raceStatus(c contender.Contender) string {
	if c.Name == contender.Naive.Name {
		return "fails (TestNaiveMapRaces)"
	}
	return "pass (go test -race ./bench/...)"
}

// writeTable prints rows as a Markdown table, with the naive strategy as a
// footnote row that is never run.
func writeTable(w io.Writer, load contender.SeedLoad, runs int, rows []row) {
	bound := load.Slowest
	fmt.Fprintf(w, "%d requests, %d tenants, at most %d in flight; connects take %s; lower bound %s (the slowest connect); median of %s\n\n",
		load.Requests, load.Tenants, load.InFlight, connectList(load), tickLabel(bound), plural(runs, "run"))
	header := []string{"strategy", "wall time", "ratio to bound", "connects", "race detector"}
	cells := [][]string{}
	for _, r := range rows {
		conn := fmt.Sprint(r.connects)
		if r.errors > 0 {
			conn += fmt.Sprintf(" (%d wrong answers)", r.errors)
		}
		cells = append(cells, []string{
			r.c.Title, fmtDuration(r.wall), fmtRatio(ratio(r.wall, bound)), conn, raceStatus(r.c),
		})
	}
	cells = append(cells, []string{contender.Naive.Title + " ¹", "not run", "-", "-", raceStatus(contender.Naive)})

	widths := make([]int, len(header))
	for _, line := range append([][]string{header}, cells...) {
		for i, s := range line {
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	right := []bool{false, true, true, true, false}
	printLine := func(line []string) {
		fmt.Fprint(w, "|")
		for i, s := range line {
			pad := strings.Repeat(" ", widths[i]-len([]rune(s)))
			if right[i] {
				fmt.Fprintf(w, " %s%s |", pad, s)
			} else {
				fmt.Fprintf(w, " %s%s |", s, pad)
			}
		}
		fmt.Fprintln(w)
	}
	printLine(header)
	fmt.Fprint(w, "|")
	for i, n := range widths {
		if right[i] {
			fmt.Fprintf(w, "%s:|", strings.Repeat("-", n+1))
		} else {
			fmt.Fprintf(w, "%s|", strings.Repeat("-", n+2))
		}
	}
	fmt.Fprintln(w)
	for _, line := range cells {
		printLine(line)
	}
	fmt.Fprintf(w, "\n%d connects is the minimum (one per tenant).\n", load.Tenants)
	fmt.Fprintln(w, "¹ The seed's unlocked map is never timed: concurrent map writes crash the program")
	fmt.Fprintln(w, "  (\"fatal error: concurrent map writes\") and the race detector reports it every time,")
	fmt.Fprintln(w, "  which TestNaiveMapRaces checks. The other rows are run under the race detector by")
	fmt.Fprintln(w, "  TestContendersRace; \"pass\" means that test passes, run it to confirm on your machine.")
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
