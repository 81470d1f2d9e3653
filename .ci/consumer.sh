#!/usr/bin/env bash
# The consumer test: release the checkout as it is (a copy, in a temporary
# git repository) at $RESCACHE_RELEASE_VERSION (default v0.2.0) with
# tools/cmd/release, build a file-system module proxy of the released
# modules from the tags with tools/cmd/modproxy, then, in a fresh module
# outside the repository, with GOWORK=off, no replace and -mod=mod, go get
# every published module from that proxy (other modules come from the
# module cache or the public proxy), build and run .ci/consumer/main.go.
# Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
version=${RESCACHE_RELEASE_VERSION:-v0.2.0}
export PATH="/usr/local/go/bin:$PATH"

tmp=$(mktemp -d)
cleanup() {
	# The module cache is read-only unless -modcacherw; it is, below.
	rm -rf "$tmp"
}
trap cleanup EXIT

# 1. A copy of the checkout (tracked and untracked files, not the ignored
#    ones) as one commit in a repository of its own.
mkdir "$tmp/repo"
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
	if [ -e "$f" ]; then printf '%s\0' "$f"; fi
done | tar --null -T - -cf - | tar -xf - -C "$tmp/repo"
export GIT_AUTHOR_NAME="rescache release test" GIT_AUTHOR_EMAIL="release-test@rescache.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
git -C "$tmp/repo" init -q
git -C "$tmp/repo" add -A
git -C "$tmp/repo" commit -q -m "checkout under test"

# 2. The release: requirements bumped, committed, tagged; then the proxy.
(cd "$repo/tools" && go run ./cmd/release -dir "$tmp/repo" -version "$version")
(cd "$repo/tools" && go run ./cmd/modproxy -repo "$tmp/repo" -version "$version" -out "$tmp/proxy")

# Every published module's zip carries the Apache-2.0 LICENSE: its own or,
# for a module in a subdirectory without one, the repository's, as the go
# command adds it.
zips=$(find "$tmp/proxy" -name "$version.zip" | sort)
if [ -z "$zips" ]; then
	echo "no module zip in the proxy" >&2
	exit 1
fi
for z in $zips; do
	# Read whole before grep -q, which would cut a pipe short (pipefail).
	files=$(unzip -Z1 "$z")
	if ! grep -q "@$version/LICENSE\$" <<<"$files"; then
		echo "$z has no LICENSE" >&2
		exit 1
	fi
	license=$(unzip -p "$z" "*@$version/LICENSE")
	if ! grep -q 'Apache License' <<<"$license"; then
		echo "$z: LICENSE is not the Apache License" >&2
		exit 1
	fi
	echo "LICENSE in ${z#"$tmp/proxy/"}"
done

# 3. A consumer outside the repository.
modcache=$(GOWORK=off go env GOMODCACHE) # this machine's, read before it is replaced below
mkdir "$tmp/consumer"
cp .ci/consumer/main.go "$tmp/consumer/"
cd "$tmp/consumer"
export GOWORK=off
export GOFLAGS="-mod=mod -modcacherw"
export GOMODCACHE="$tmp/modcache"
# Our modules from the local proxy only (a version that exists nowhere
# else); everything else from this machine's module cache, then the
# public proxy.
export GOPROXY="file://$tmp/proxy,file://$modcache/cache/download,https://proxy.golang.org"
export GONOSUMDB=github.com/rescache
cat > go.mod <<EOM
module example.com/consumer

go 1.25.0
EOM
go get \
	"github.com/rescache/rescache@$version" \
	"github.com/rescache/rescache/sqladapter@$version" \
	"github.com/rescache/rescache/budget/redisbudget@$version" \
	"github.com/rescache/rescache/pgxadapter@$version" \
	"github.com/rescache/rescache/redisadapter@$version" \
	"github.com/rescache/rescache/promcollector@$version" \
	"github.com/rescache/rescache/otelmetrics@$version" \
	modernc.org/sqlite@v1.58.0
if grep -q '^replace' go.mod; then
	echo "consumer go.mod has a replace directive" >&2
	exit 1
fi
echo "consumer go.mod:"
grep 'github.com/rescache' go.mod
go build -o consumer .
./consumer | tee out.txt
grep -qx 'acme has 2 notes' out.txt
grep -qx 'pools opened: 2' out.txt
grep -qx 'otelmetrics registered' out.txt
echo "consumer test: passed (github.com/rescache/... $version installed from a module proxy)"
