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
	for _, want := range []string{
		"lower bound 250 ms", "median of 3 runs",
		"| seed 2: lock held across connect", "42.4x", "1.004x", " 115 |",
		contender.Naive.Title, "not run", "fails (TestNaiveMapRaces)",
		"pass (go test -race ./bench/...)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestDrawSVG(t *testing.T) {
	svg := drawSVG(contender.DefaultSeedLoad, 3, fakeRows())
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
	for _, want := range []string{"lower bound 250 ms", "(bar cut)", "rescache (Get)", "stroke-dasharray"} {
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
