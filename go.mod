module github.com/rescache/rescache

go 1.25
