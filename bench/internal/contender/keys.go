package contender

import (
	"fmt"
	"math/rand/v2"
)

// The key streams of the benchmarks and of the seedtable command's second
// table: keys drawn from a Zipf distribution (a few hot tenants, a long
// tail) with a fixed seed, made before any clock starts.
const (
	ZipfS    = 1.1    // Zipf exponent s: rank r is drawn with weight (1+r)^-s
	ZipfSeed = 0x5eed // seed of every key stream
)

// TenantKeys returns n distinct keys, "tenant-00000" and so on.
func TenantKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("tenant-%05d", i)
	}
	return keys
}

// ZipfStream returns n keys drawn from keys with a Zipf distribution of
// exponent ZipfS, the first key the most frequent, from a fixed seed: the
// same keys and n give the same stream.
func ZipfStream(keys []string, n int) []string {
	r := rand.New(rand.NewPCG(ZipfSeed, uint64(len(keys))))
	z := rand.NewZipf(r, ZipfS, 1, uint64(len(keys)-1))
	s := make([]string, n)
	for i := range s {
		s[i] = keys[z.Uint64()]
	}
	return s
}
