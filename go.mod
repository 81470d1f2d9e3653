module github.com/rescache/rescache

go 1.25.0

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // test only: the hit-path benchmarks' floor
)

require (
	github.com/leanovate/gopter v0.2.11 // test only
	go.uber.org/goleak v1.3.0 // test only
)
