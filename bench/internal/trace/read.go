// Package trace reads recorded cache traces and replays them through
// eviction policies: rescache's LRU and TinyLFU, otter v2, golang-lru's LRU
// and ARC, and Bélády's offline optimum. The trace-replay test of package
// bench and the tracereplay command (bench/cmd/tracereplay) use this code.
//
// A trace is a sequence of keys, one per access; a replay builds the value
// of a key on a miss, and the hit ratio is the share of accesses that did
// not build.
package trace

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
)

// Format is the encoding of a trace's keys, after decompression.
type Format int

const (
	// Text is the LIRS format: one integer key per line; lines that are
	// empty or equal to "*" are skipped.
	Text Format = iota
	// Int32 is a stream of big-endian 32-bit keys (cache2k's traces).
	Int32
	// Int64 is a stream of big-endian 64-bit keys (Corda's traces).
	Int64
)

// ParseFormat returns the Format named "text", "int32" or "int64".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "text":
		return Text, nil
	case "int32":
		return Int32, nil
	case "int64":
		return Int64, nil
	}
	return 0, fmt.Errorf("trace: unknown format %q (want text, int32 or int64)", s)
}

// String returns the name ParseFormat takes.
func (f Format) String() string {
	switch f {
	case Text:
		return "text"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// ReadFile reads the keys of the trace file path in format f. A name that
// ends in ".gz" is gunzipped and one that ends in ".xz" is unxz'ed first.
func ReadFile(path string, f Format) ([]uint64, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var r io.Reader = bufio.NewReaderSize(file, 1<<16)
	switch filepath.Ext(path) {
	case ".gz":
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("trace: %s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	case ".xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("trace: %s: %w", path, err)
		}
		r = x
	}
	keys, err := Read(r, f)
	if err != nil {
		return nil, fmt.Errorf("trace: %s: %w", path, err)
	}
	return keys, nil
}

// Read reads the keys of a decompressed trace in format f. A binary stream
// whose length is not a multiple of the key size is an error.
func Read(r io.Reader, f Format) ([]uint64, error) {
	switch f {
	case Text:
		return readText(r)
	case Int32, Int64:
		return readBinary(r, f)
	}
	return nil, fmt.Errorf("trace: unknown format %v", f)
}

func readText(r io.Reader) ([]uint64, error) {
	var keys []uint64
	s := bufio.NewScanner(r)
	for line := 1; s.Scan(); line++ {
		t := strings.TrimSpace(s.Text())
		if t == "" || t == "*" {
			continue
		}
		k, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q is not an integer", line, t)
		}
		keys = append(keys, uint64(k))
	}
	return keys, s.Err()
}

func readBinary(r io.Reader, f Format) ([]uint64, error) {
	size := 4
	if f == Int64 {
		size = 8
	}
	br := bufio.NewReaderSize(r, 1<<16)
	var keys []uint64
	buf := make([]byte, size)
	for {
		n, err := io.ReadFull(br, buf)
		switch {
		case errors.Is(err, io.EOF):
			return keys, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%d trailing bytes after %d %v keys", n, len(keys), f)
		case err != nil:
			return nil, err
		}
		if size == 4 {
			keys = append(keys, uint64(binary.BigEndian.Uint32(buf)))
		} else {
			keys = append(keys, binary.BigEndian.Uint64(buf))
		}
	}
}
