package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// closerRow is one contender's medians in the second table: churn, and the
// tenant burst without and with a connection budget.
type closerRow struct {
	c contender.Contender

	requests       int64 // churn requests per run
	usedAfterClose int64 // median over runs
	churnBuilds    int64 // median
	churnErrors    int64 // summed over runs

	burstBuilds  int64 // median, without budget
	freeFailed   int64 // median failed requests, without budget
	freePeak     int64 // median peak server connections, without budget
	budgetFailed int64 // the same with the budget
	budgetPeak   int64
	budgetWall   time.Duration // median wall time of the burst with the budget
	leftOpen     int64         // the most connections left open after Close, over all burst runs
}

// measureClosers runs the churn load and the burst, without and with the
// budget, runs times each with c.
func measureClosers(churn contender.ChurnLoad, burst contender.BurstLoad, budget int, c contender.Contender, runs int) (closerRow, error) {
	ctx := context.Background()
	var uac, builds, bBuilds, fFailed, fPeak, bFailed, bPeak []int64
	var bWall []time.Duration
	r := closerRow{c: c, requests: int64(churn.Requests)}
	withBudget := burst
	withBudget.Budget = budget
	for i := range runs {
		progressf("%-42s run %d/%d ", c.Title, i+1, runs)
		ch, err := churn.Run(ctx, c)
		if err != nil {
			return r, err
		}
		free, err := burst.Run(ctx, c)
		if err != nil {
			return r, err
		}
		bud, err := withBudget.Run(ctx, c)
		if err != nil {
			return r, err
		}
		progressf("churn %d closed in use, %d builds; burst %d/%d failed, peak %d / with budget %d failed, peak %d\n",
			ch.UsedAfterClose, ch.Builds, free.Failed, free.Requests, free.Peak, bud.Failed, bud.Peak)
		uac = append(uac, ch.UsedAfterClose)
		builds = append(builds, ch.Builds)
		r.churnErrors += ch.Errors
		bBuilds = append(bBuilds, free.Builds)
		fFailed = append(fFailed, free.Failed)
		fPeak = append(fPeak, free.Peak)
		bFailed = append(bFailed, bud.Failed)
		bPeak = append(bPeak, bud.Peak)
		bWall = append(bWall, bud.Wall)
		r.leftOpen = max(r.leftOpen, free.LeftOpen, bud.LeftOpen)
	}
	r.usedAfterClose, r.churnBuilds = median(uac), median(builds)
	r.burstBuilds, r.freeFailed, r.freePeak = median(bBuilds), median(fFailed), median(fPeak)
	r.budgetFailed, r.budgetPeak, r.budgetWall = median(bFailed), median(bPeak), median(bWall)
	return r, nil
}

// closerCells returns the second table's header and cells.
func closerCells(burst contender.BurstLoad, budget int, rows []closerRow) (header []string, right []bool, cells [][]string) {
	requests := burst.Tenants * burst.PerTenant
	header = []string{
		"strategy",
		"closed while in use",
		"builds (churn)",
		fmt.Sprintf("builds (burst, min %d)", burst.Tenants),
		"failed, no budget",
		"peak conns, no budget",
		fmt.Sprintf("failed, budget %d", budget),
		fmt.Sprintf("peak conns, budget %d", budget),
		"burst time, budget",
		"left open",
	}
	right = []bool{false, true, true, true, true, true, true, true, true, true}
	for _, r := range rows {
		uac := fmtPercent(r.usedAfterClose, r.requests)
		if r.usedAfterClose > 0 {
			uac += fmt.Sprintf(" (%d)", r.usedAfterClose)
		}
		if r.churnErrors > 0 {
			uac += fmt.Sprintf(" (%d errors)", r.churnErrors)
		}
		cells = append(cells, []string{
			r.c.Title,
			uac,
			fmt.Sprint(r.churnBuilds),
			fmt.Sprint(r.burstBuilds),
			fmt.Sprintf("%d of %d", r.freeFailed, requests),
			fmt.Sprint(r.freePeak),
			fmt.Sprintf("%d of %d", r.budgetFailed, requests),
			fmt.Sprint(r.budgetPeak),
			fmtDuration(r.budgetWall),
			fmt.Sprint(r.leftOpen),
		})
	}
	return header, right, cells
}

// writeClosers prints the second table as Markdown, with what each column
// means.
func writeClosers(w *bytes.Buffer, churn contender.ChurnLoad, burst contender.BurstLoad, budget, runs int, rows []closerRow) {
	fmt.Fprintf(w, "Contenders that close values; median of %s.\n", plural(runs, "run"))
	fmt.Fprintf(w, "Churn: %d requests, Zipf over %d tenants, MaxEntries %d, build %s, each request holds its value %s, %d goroutines.\n",
		churn.Requests, churn.Tenants, churn.MaxEntries, churn.Build, churn.Use, churn.Workers)
	fmt.Fprintf(w, "Burst: %d tenants x %d requests at once, MaxEntries %d, a pool of %d connections per tenant (its build opens one), connect %s, use %s,\n",
		burst.Tenants, burst.PerTenant, burst.MaxEntries, burst.PoolSize, burst.Connect, burst.Use)
	fmt.Fprintf(w, "on a simulated server; the budget is a semaphore of %d server connections in this command (waits up to %s, reclaims idle connections of other tenants).\n\n",
		budget, burst.BudgetWait)
	header, right, cells := closerCells(burst, budget, rows)
	printMarkdown(w, header, right, cells)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "closed while in use: churn requests whose value was closed while they held it (checked when handed out and after the use).")
	fmt.Fprintln(w, "builds: values built; in the burst every tenant needs one, more are duplicate builds of a tenant or rebuilds of a tenant evicted during the burst.")
	fmt.Fprintln(w, "failed: burst requests that got no connection: the pool was closed under them (evicted while in use), or the budget or deadline ran out.")
	fmt.Fprintln(w, "peak conns: the most connections open at the simulated server at once.")
	fmt.Fprintln(w, "left open: connections still open after the cache was closed and had a second to close its values: values it never closed.")
}

// fmtPercent formats n of total as a percentage: "0%" only for none, and
// enough decimals to show a small share.
func fmtPercent(n, total int64) string {
	if n == 0 || total == 0 {
		return "0%"
	}
	p := 100 * float64(n) / float64(total)
	switch {
	case p >= 1:
		return fmt.Sprintf("%.2f%%", p)
	case p >= 0.01:
		return fmt.Sprintf("%.3f%%", p)
	default:
		return fmt.Sprintf("%.4f%%", p)
	}
}

// printMarkdown prints a Markdown table with columns padded to their width.
func printMarkdown(w *bytes.Buffer, header []string, right []bool, cells [][]string) {
	widths := make([]int, len(header))
	for _, line := range append([][]string{header}, cells...) {
		for i, s := range line {
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
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
}
