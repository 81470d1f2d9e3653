package trace

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ulikunitz/xz"
)

func TestReadText(t *testing.T) {
	got, err := Read(bytes.NewBufferString("1\n*\n\n22\n 3 \n*\n1\n"), Text)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 22, 3, 1}; !slices.Equal(got, want) {
		t.Errorf("Read = %v; want %v", got, want)
	}
	if _, err := Read(bytes.NewBufferString("1\nx\n"), Text); err == nil {
		t.Error("Read of a line that is not an integer: no error")
	}
}

func TestReadBinary(t *testing.T) {
	var b32, b64 bytes.Buffer
	for _, k := range []uint64{7, 1 << 31, 5} {
		binary.Write(&b32, binary.BigEndian, uint32(k))
		binary.Write(&b64, binary.BigEndian, k<<8)
	}
	got, err := Read(bytes.NewReader(b32.Bytes()), Int32)
	if want := []uint64{7, 1 << 31, 5}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Read(int32) = %v, %v; want %v", got, err, want)
	}
	got, err = Read(bytes.NewReader(b64.Bytes()), Int64)
	if want := []uint64{7 << 8, 1 << 39, 5 << 8}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Read(int64) = %v, %v; want %v", got, err, want)
	}
	if _, err := Read(bytes.NewReader(b32.Bytes()[:5]), Int32); err == nil {
		t.Error("Read of 5 bytes as int32: no error")
	}
}

// TestReadFileCompressed writes the same int64 keys gzipped and xz'ed and
// reads them back.
func TestReadFileCompressed(t *testing.T) {
	keys := []uint64{1, 2, 3, 1 << 60}
	var raw bytes.Buffer
	for _, k := range keys {
		binary.Write(&raw, binary.BigEndian, k)
	}
	dir := t.TempDir()
	var gz, x bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(raw.Bytes())
	gw.Close()
	xw, err := xz.NewWriter(&x)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(raw.Bytes())
	xw.Close()
	for name, data := range map[string][]byte{"t.gz": gz.Bytes(), "t.xz": x.Bytes(), "t.bin": raw.Bytes()} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(p, Int64)
		if err != nil || !slices.Equal(got, keys) {
			t.Errorf("ReadFile(%s) = %v, %v; want %v", name, got, err, keys)
		}
	}
}

func TestOptimumMatchesExhaustiveSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		keys := make([]uint64, 4+r.IntN(9))
		for i := range keys {
			keys[i] = uint64(r.IntN(5))
		}
		size := 1 + r.IntN(3)
		if got, want := Optimum(keys, size), exhaustive(keys, size); got != want {
			t.Fatalf("Optimum(%v, %d) = %d; want %d", keys, size, got, want)
		}
	}
}

// exhaustive returns the most hits any policy can get on keys with room for
// size entries, trying every choice on every miss with the cache full.
func exhaustive(keys []uint64, size int) int {
	var rec func(i int, cache []uint64) int
	rec = func(i int, cache []uint64) int {
		if i == len(keys) {
			return 0
		}
		k := keys[i]
		if slices.Contains(cache, k) {
			return 1 + rec(i+1, cache)
		}
		if len(cache) < size {
			return rec(i+1, append(slices.Clone(cache), k))
		}
		best := rec(i+1, cache) // leave the missed key out
		for j := range cache {
			c := slices.Clone(cache)
			c[j] = k
			best = max(best, rec(i+1, c))
		}
		return best
	}
	return rec(0, nil)
}

func TestParseTrace(t *testing.T) {
	tr, err := ParseTrace("oltp=/x/oltp.trace.gz:text:1000,2000:recency")
	if err != nil || tr.Name != "oltp" || tr.File != "/x/oltp.trace.gz" || tr.Format != Text || !slices.Equal(tr.Sizes, []int{1000, 2000}) || !tr.Recency {
		t.Errorf("ParseTrace = %+v, %v", tr, err)
	}
	for _, bad := range []string{"x", "x=f:text", "x=f:bin:10", "x=f:text:0", "x=f:text:10:lru"} {
		if _, err := ParseTrace(bad); err == nil {
			t.Errorf("ParseTrace(%q): no error", bad)
		}
	}
}

// TestPool checks that pooled rows carry the sums of the replays' hits and
// accesses, so that their ratios are the means over the replays.
func TestPool(t *testing.T) {
	tr := Trace{Name: "t"}
	a := []Row{{Trace: tr, Size: 1, Accesses: 10, Hits: []int{2, 4}}, {Trace: tr, Size: 2, Accesses: 10, Hits: []int{5, 6}}}
	b := []Row{{Trace: tr, Size: 1, Accesses: 10, Hits: []int{4, 4}}, {Trace: tr, Size: 2, Accesses: 10, Hits: []int{7, 8}}}
	p := Pool([][]Row{a, b})
	if len(p) != 2 || p[0].Accesses != 20 || p[0].Ratio(0) != .3 || p[0].Ratio(1) != .4 || p[1].Size != 2 || p[1].Ratio(0) != .6 || p[1].Ratio(1) != .7 {
		t.Errorf("Pool = %+v; want ratios .3 .4 and .6 .7 over 20 accesses", p)
	}
	if a[0].Hits[0] != 2 {
		t.Errorf("Pool changed its input: %+v", a[0])
	}
	if Pool(nil) != nil {
		t.Error("Pool(nil) is not nil")
	}
}
