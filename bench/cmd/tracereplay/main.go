// Command tracereplay replays recorded cache traces through rescache's LRU
// and TinyLFU, otter v2, golang-lru's LRU and ARC, and Bélády's offline
// optimum, and prints one row of hit ratios per trace and cache size (a
// Markdown table), then the rows where TinyLFU misses the goals of issue
// 22. It exits with status 1 if any policy hits more often than the
// optimum in any row (a defect of the harness), if a trace cannot be
// read, or, with -claims, if a claim of the README about TinyLFU fails
// (trace.Claims).
//
// Usage, from the repository root:
//
//	go run ./bench/cmd/tracereplay [-traces DIR] [-run REGEXP] [-claims] [NAME=FILE:FORMAT:SIZES[:recency] ...]
//
// -traces defaults to $RESCACHE_TRACES, else ../shared/traces. Each
// argument adds a trace: FILE relative to -traces (or absolute), FORMAT
// text, int32 or int64 (gzip and xz by the file's suffix), SIZES a comma
// list, and "recency" for a trace where TinyLFU must stay within a point
// of LRU. -run keeps only the traces whose name matches.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"

	"github.com/rescache/rescache/bench/internal/trace"
)

func main() {
	dir := flag.String("traces", trace.Dir("."), "the traces folder")
	run := flag.String("run", "", "replay only the traces whose name matches this regular expression")
	builtin := flag.Bool("builtin", true, "replay the builtin traces of the shared folder")
	claims := flag.Bool("claims", false, "exit 1 when a claim of the README fails (TinyLFU within a point of LRU on recency traces, its mean gap to the optimum at or below otter's)")
	flag.Parse()
	var traces []trace.Trace
	if *builtin {
		traces = append(traces, trace.Builtin...)
	}
	for _, a := range flag.Args() {
		t, err := trace.ParseTrace(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		traces = append(traces, t)
	}
	re, err := regexp.Compile(*run)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracereplay: -run:", err)
		os.Exit(2)
	}
	var rows []trace.Row
	for _, t := range traces {
		if !re.MatchString(t.Name) {
			continue
		}
		r, err := trace.Replay(*dir, t, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		rows = append(rows, r...)
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "tracereplay: no trace matched")
		os.Exit(2)
	}
	trace.WriteTable(os.Stdout, rows)
	if missed := trace.Goals(rows); len(missed) > 0 {
		fmt.Println("\nTinyLFU misses a goal of issue 22:")
		for _, m := range missed {
			fmt.Println("-", m)
		}
	} else {
		fmt.Println("\nTinyLFU meets every goal of issue 22 in these rows.")
	}
	if err := trace.CheckOptimum(rows); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if failed := trace.Claims(rows); *claims && len(failed) > 0 {
		fmt.Fprintln(os.Stderr, "tracereplay: a claim of the README fails:")
		for _, f := range failed {
			fmt.Fprintln(os.Stderr, "-", f)
		}
		os.Exit(1)
	}
}
