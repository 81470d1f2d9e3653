module github.com/rescache/rescache/redisadapter

go 1.25.0

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/redis/go-redis/v9 v9.22.0
	github.com/rescache/rescache v0.2.0
	github.com/rescache/rescache/budget v0.2.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // indirect
	github.com/rescache/rescache/budget/redisbudget v0.2.0
	github.com/yuin/gopher-lua v1.1.1 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)

replace github.com/rescache/rescache => ../

replace github.com/rescache/rescache/budget => ../budget

replace github.com/rescache/rescache/budget/redisbudget => ../budget/redisbudget
