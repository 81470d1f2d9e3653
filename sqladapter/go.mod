module github.com/rescache/rescache/sqladapter

go 1.25.0

require (
	github.com/rescache/rescache v0.2.0
	github.com/rescache/rescache/budget v0.2.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // indirect
	golang.org/x/sync v0.22.0 // indirect
)

replace github.com/rescache/rescache => ../

replace github.com/rescache/rescache/budget => ../budget
