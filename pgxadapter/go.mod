module github.com/rescache/rescache/pgxadapter

go 1.25.0

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/rescache/rescache v0.2.0
	github.com/rescache/rescache/budget v0.2.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace (
	github.com/rescache/rescache => ../
	github.com/rescache/rescache/budget => ../budget
)
