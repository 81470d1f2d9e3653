// rescache-release: unpublished (benchmarks, run from a checkout)

module github.com/rescache/rescache/bench

go 1.25.0

require (
	github.com/bep/lazycache v0.8.0
	github.com/hashicorp/golang-lru/arc/v2 v2.0.7
	github.com/hashicorp/golang-lru/v2 v2.0.7
	github.com/jellydator/ttlcache/v3 v3.4.1
	github.com/maypok86/otter/v2 v2.4.0
	github.com/puzpuzpuz/xsync/v3 v3.5.1
	github.com/rescache/rescache v0.2.0
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sync v0.22.0
)

replace github.com/rescache/rescache => ../
