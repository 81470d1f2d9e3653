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
// the lower bound as a vertical line. Bars longer than clipFactor times the
// bound are cut short and marked, with their real value printed.
func drawSVG(load contender.SeedLoad, runs int, rows []row) []byte {
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
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s">`+"\n",
		chartWidth, height, chartWidth, height, fontFamily)
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
	b.WriteString("</svg>\n")
	return b.Bytes()
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
