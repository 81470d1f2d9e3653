package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strings"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// Layout of the chart, in SVG user units (pixels).
const (
	chartWidth  = 1080
	labelWidth  = 350 // strategy names, right-aligned against the bars
	barsWidth   = 420 // the longest bar
	rowHeight   = 34
	barHeight   = 20
	topMargin   = 92
	clipFactor  = 4 // bars longer than clipFactor times the bound are cut
	fontFamily  = "DejaVu Sans, Verdana, Arial, sans-serif"
	colorOnce   = "#4C78A8" // one connect per tenant
	colorDup    = "#E45756" // more connects than tenants
	colorBound  = "#222222"
	colorGrid   = "#DDDDDD"
	colorMuted  = "#555555"
	colorClipBG = "#FFFFFF"
)

// drawSVG draws rows as a horizontal bar chart of median wall times, with
// the lower bound as a vertical line, and below it crows, the second table,
// as a table. Bars longer than clipFactor times the bound are cut short and
// marked, with their real value printed.
func drawSVG(load contender.SeedLoad, runs int, rows []row, burst contender.BurstLoad, budget int, crows []closerRow) []byte {
	bound := load.Slowest
	axisMax := time.Duration(0)
	for _, r := range rows {
		axisMax = max(axisMax, r.wall)
	}
	axisMax = min(axisMax, clipFactor*bound)
	step := niceStep(axisMax)
	axisMax = time.Duration(math.Ceil(float64(axisMax)/float64(step))) * step
	x := func(d time.Duration) float64 {
		return labelWidth + float64(barsWidth)*float64(min(d, axisMax))/float64(axisMax)
	}

	height := topMargin + len(rows)*rowHeight + 100
	table2Top := height + 20
	width := chartWidth
	var t2 table2Layout
	if len(crows) > 0 {
		t2 = layoutTable2(burst, budget, crows)
		height = table2Top + t2.height
		width = max(width, t2.width)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">`+"\n",
		width, height, width, height, fontFamily)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#FFFFFF"/>`+"\n")
	fmt.Fprintf(&b, `<text x="20" y="30" font-size="20" font-weight="bold">Seed benchmark: wall time to serve %d requests (median of %s)</text>`+"\n",
		load.Requests, plural(runs, "run"))
	fmt.Fprintf(&b, `<text x="20" y="54" font-size="14" fill="%s">%d tenants whose first connect takes %s, at most %d requests in flight. Shorter is better.</text>`+"\n",
		colorMuted, load.Tenants, html.EscapeString(connectList(load)), load.InFlight)

	// Grid and axis ticks.
	axisY := topMargin + len(rows)*rowHeight
	for t := time.Duration(0); t <= axisMax; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x(t), topMargin-6, x(t), axisY, colorGrid)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" text-anchor="middle" fill="%s">%s</text>`+"\n",
			x(t), axisY+18, colorMuted, tickLabel(t))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", labelWidth, axisY, labelWidth+barsWidth, axisY, colorMuted)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="middle" fill="%s">median wall time</text>`+"\n",
		labelWidth+barsWidth/2, axisY+36, colorMuted)

	// Bars.
	for i, r := range rows {
		y := topMargin + i*rowHeight
		color := colorOnce
		if r.connects > int64(load.Tenants) {
			color = colorDup
		}
		weight := "normal"
		if strings.HasPrefix(r.c.Name, "rescache") {
			weight = "bold"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" text-anchor="end" font-weight="%s">%s</text>`+"\n",
			labelWidth-10, y+barHeight-5, weight, html.EscapeString(r.c.Title))
		end := x(r.wall)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelWidth, y, end-labelWidth, barHeight, color)
		if r.wall > axisMax {
			// Two white slashes near the end say the bar is cut.
			for _, dx := range []float64{-26, -18} {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="3"/>`+"\n",
					end+dx, y+barHeight+2, end+dx+6, y-2, colorClipBG)
			}
		}
		label := fmt.Sprintf("%s · %s · %d connects", fmtDuration(r.wall), fmtRatio(ratio(r.wall, bound)), r.connects)
		if r.wall > axisMax {
			label += " (bar cut)"
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="13" fill="#000000">%s</text>`+"\n", end+8, y+barHeight-5, html.EscapeString(label))
	}

	// The bound, drawn over the bars.
	bx := x(bound)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="6,4"/>`+"\n",
		bx, topMargin-14, bx, axisY, colorBound)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="13" text-anchor="middle" fill="%s">lower bound %s (slowest connect)</text>`+"\n",
		bx, topMargin-20, colorBound, tickLabel(bound))

	// Legend.
	ly := axisY + 62
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="14" fill="%s"/>`+"\n", labelWidth, ly-11, colorOnce)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13">%d connects (one per tenant)</text>`+"\n", labelWidth+20, ly, load.Tenants)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="14" fill="%s"/>`+"\n", labelWidth+250, ly-11, colorDup)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13">redundant connects</text>`+"\n", labelWidth+270, ly)
	fmt.Fprintf(&b, `<text x="20" y="%d" font-size="12" fill="%s">The seed's unlocked map is not shown: it races (concurrent map writes), so it is never timed.</text>`+"\n",
		ly+24, colorMuted)
	if len(crows) > 0 {
		drawTable2(&b, table2Top, runs, t2)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// Layout of the second table, drawn as a grid of text.
const (
	t2CharWidth = 7.2 // approximate width of a character at t2FontSize
	t2FontSize  = 13
	t2RowHeight = 24
	t2Pad       = 16 // space between columns
	t2Head      = 84 // title and subtitle above the header row
)

// table2Layout is the second table's cells and column geometry.
type table2Layout struct {
	header []string
	right  []bool
	cells  [][]string
	x      []float64 // left edge of each column
	widths []float64
	width  int // of the whole drawing
	height int
	burst  contender.BurstLoad
	budget int
}

// layoutTable2 sizes the second table's columns to their longest cell.
func layoutTable2(burst contender.BurstLoad, budget int, crows []closerRow) table2Layout {
	header, right, cells := closerCells(burst, budget, crows)
	l := table2Layout{header: header, right: right, cells: cells, burst: burst, budget: budget}
	x := 20.0
	for i := range header {
		w := float64(len([]rune(header[i])))
		for _, c := range cells {
			w = max(w, float64(len([]rune(c[i]))))
		}
		l.x = append(l.x, x)
		l.widths = append(l.widths, w*t2CharWidth)
		x += w*t2CharWidth + t2Pad
	}
	l.width = int(math.Ceil(x)) + 20
	l.height = t2Head + (len(cells)+1)*t2RowHeight + 40
	return l
}

// drawTable2 draws the second table at y = top.
func drawTable2(b *bytes.Buffer, top, runs int, l table2Layout) {
	fmt.Fprintf(b, `<text x="20" y="%d" font-size="20" font-weight="bold">Contenders that close values: churn, and a tenant burst on a simulated server (median of %s)</text>`+"\n",
		top+24, plural(runs, "run"))
	fmt.Fprintf(b, `<text x="20" y="%d" font-size="14" fill="%s">%s</text>`+"\n", top+48, colorMuted, html.EscapeString(fmt.Sprintf(
		"Burst: %d tenants x %d requests at once, MaxEntries %d, pools of %d; the budget (%d server connections) is a semaphore in the benchmark.",
		l.burst.Tenants, l.burst.PerTenant, l.burst.MaxEntries, l.burst.PoolSize, l.budget)))
	fmt.Fprintf(b, `<text x="20" y="%d" font-size="14" fill="%s">Closed while in use and failed requests: lower is better; 0 means none was seen.</text>`+"\n", top+68, colorMuted)
	row := func(y int, line []string, weight string) {
		for i, s := range line {
			x, anchor := l.x[i], "start"
			if l.right[i] {
				x, anchor = l.x[i]+l.widths[i], "end"
			}
			w := weight
			if i == 0 && strings.HasPrefix(s, "rescache") {
				w = "bold"
			}
			fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="%d" text-anchor="%s" font-weight="%s">%s</text>`+"\n",
				x, y, t2FontSize, anchor, w, html.EscapeString(s))
		}
	}
	y := top + t2Head + t2RowHeight
	row(y, l.header, "bold")
	fmt.Fprintf(b, `<line x1="20" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", y+8, l.width-20, y+8, colorMuted)
	for _, c := range l.cells {
		y += t2RowHeight
		row(y, c, "normal")
	}
}

// niceStep returns a grid step of 1, 2 or 5 times a power of ten
// milliseconds that cuts 0..span into 4 to 10 parts.
func niceStep(span time.Duration) time.Duration {
	for _, s := range []time.Duration{
		10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
	} {
		if span/s <= 8 {
			return s
		}
	}
	return 30 * time.Second
}

// tickLabel formats an axis tick: "250 ms", "1 s".
func tickLabel(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%d ms", d/time.Millisecond)
}
