package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rescache/rescache/bench/internal/contender"
)

// fakeRows are rows as measure would return them, one of them far beyond
// the axis.
func fakeRows() []row {
	ms := time.Millisecond
	return []row{
		{c: contender.Lock, wall: 10600 * ms, connects: 56},
		{c: contender.Channels, wall: 251 * ms, connects: 4},
		{c: contender.LRU, wall: 485 * ms, connects: 115},
		{c: contender.Rescache, wall: 252 * ms, connects: 4},
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	writeTable(&b, contender.DefaultSeedLoad, 3, fakeRows())
	out := b.String()
	if strings.Contains(out, "race") && !strings.Contains(out, "TestNaiveMapRaces") {
		t.Errorf("table mentions the race detector outside the naive footnote:\n%s", out)
	}
	for _, want := range []string{
		"lower bound 250 ms", "median of 3 runs",
		"| seed 2: lock held across connect", "42.4x", "1.004x", " 115 |",
		contender.Naive.Title, "not run", "| wrong answers |", "0 of 900",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestDrawSVG(t *testing.T) {
	svg := drawSVG(contender.DefaultSeedLoad, 3, fakeRows(), contender.DefaultBurstLoad, 100, fakeCloserRows())
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("drawSVG output is not well-formed XML: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"lower bound 250 ms", "(bar cut)", "rescache (Get)", "stroke-dasharray",
		"Contenders that close values", "peak conns, budget 100", "0.691% (1382)"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestMedian(t *testing.T) {
	if got := median([]int64{5, 1, 3}); got != 3 {
		t.Errorf("median(5, 1, 3) = %d; want 3", got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median(4, 1, 3, 2) = %d; want 2 (the lower middle)", got)
	}
}

// fakeCloserRows are second-table rows as measureClosers would return them.
func fakeCloserRows() []closerRow {
	return []closerRow{
		{c: contender.RescacheAcquire, requests: 200000, churnBuilds: 56926, burstBuilds: 203,
			freePeak: 798, budgetPeak: 100, budgetWall: 62 * time.Millisecond},
		{c: contender.Otter, requests: 200000, usedAfterClose: 1382, churnBuilds: 46131, burstBuilds: 201,
			freeFailed: 366, freePeak: 433, budgetFailed: 439, budgetPeak: 99, budgetWall: 42 * time.Millisecond, leftOpen: 3},
	}
}

func TestWriteClosers(t *testing.T) {
	var b bytes.Buffer
	writeClosers(&b, contender.DefaultChurnLoad, contender.DefaultBurstLoad, 100, 3, fakeCloserRows())
	out := b.String()
	for _, want := range []string{
		"median of 3 runs", "semaphore of 100 server connections",
		"| rescache (Acquire + release) |", " 0% |", " 0.691% (1382) |", " 366 of 800 |", " 433 |",
		"builds (burst, min 200)", "left open:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("second table lacks %q:\n%s", want, out)
		}
	}
}

func TestFmtPercent(t *testing.T) {
	for _, tt := range []struct {
		n, total int64
		want     string
	}{
		{0, 100, "0%"}, {1, 3, "33.33%"}, {1382, 200000, "0.691%"}, {4, 200000, "0.0020%"},
	} {
		if got := fmtPercent(tt.n, tt.total); got != tt.want {
			t.Errorf("fmtPercent(%d, %d) = %q; want %q", tt.n, tt.total, got, tt.want)
		}
	}
}
