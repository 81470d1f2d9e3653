// Package bench compares rescache with the strategies of the seed and with
// peer libraries, side by side, in one binary, over the same keys and with
// the same harness. It holds only benchmarks and tests; see README.md for
// how to run them and for the figures measured.
//
// The contenders themselves live in bench/internal/contender, where the
// seedtable command (bench/cmd/seedtable) uses the very same code.
package bench
