// rescache-release: unpublished (release tooling, used from a checkout)

module github.com/rescache/rescache/tools

go 1.25.0

require golang.org/x/mod v0.35.0
