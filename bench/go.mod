module github.com/rescache/rescache/bench

go 1.25

require github.com/rescache/rescache v0.0.0-00010101000000-000000000000

replace github.com/rescache/rescache => ../
