#!/bin/sh
# cluster.sh starts and stops the 3-master Redis Cluster that the
# redisadapter tests use when RESCACHE_REDIS_CLUSTER_ADDRS is set.
#
#   redisadapter/testdata/cluster.sh start   # masters on 127.0.0.1:7000-7002
#   RESCACHE_REDIS_CLUSTER_ADDRS=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 \
#       go test ./redisadapter/...
#   redisadapter/testdata/cluster.sh stop
#
# Every node runs without persistence (--save "" --appendonly no) from its
# own directory under $RESCACHE_CLUSTER_DIR (default: $TMPDIR or /tmp,
# rescache-redis-cluster); stop shuts the nodes down and removes it.
# start on a healthy cluster started by this script does nothing; start
# when a port is taken by anything else fails.
set -eu

HOST=127.0.0.1
PORTS="7000 7001 7002"
DIR=${RESCACHE_CLUSTER_DIR:-${TMPDIR:-/tmp}/rescache-redis-cluster}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}

say() { echo "cluster.sh: $*"; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

cli() { # cli PORT ARGS...: run redis-cli against one node
	port=$1
	shift
	"$REDIS_CLI" -h "$HOST" -p "$port" "$@"
}

answers() { # answers PORT: true if a server answers PING on PORT
	[ "$(cli "$1" ping 2>/dev/null)" = PONG ]
}

cluster_ok() { # cluster_ok PORT: true if the node says cluster_state:ok
	cli "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

start() {
	command -v "$REDIS_SERVER" >/dev/null || die "$REDIS_SERVER not found"
	command -v "$REDIS_CLI" >/dev/null || die "$REDIS_CLI not found"

	running=0
	for port in $PORTS; do
		if answers "$port"; then
			running=$((running + 1))
		fi
	done
	if [ "$running" -gt 0 ]; then
		if [ "$running" -eq 3 ] && [ -d "$DIR" ]; then
			all_ok=yes
			for port in $PORTS; do
				cluster_ok "$port" || all_ok=no
			done
			if [ "$all_ok" = yes ]; then
				say "cluster already running on $HOST ports $PORTS (state ok); nothing to do"
				exit 0
			fi
		fi
		die "$running of the ports $PORTS already answer on $HOST, but not as a healthy cluster started from $DIR; run '$0 stop' or free the ports"
	fi

	rm -rf "$DIR"
	for port in $PORTS; do
		mkdir -p "$DIR/$port"
		say "starting redis-server on $HOST:$port (dir $DIR/$port)"
		"$REDIS_SERVER" --port "$port" --bind "$HOST" \
			--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
			--save "" --appendonly no \
			--dir "$DIR/$port" --daemonize yes \
			--pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log"
	done
	for port in $PORTS; do
		i=0
		until answers "$port"; do
			i=$((i + 1))
			[ "$i" -le 100 ] || die "redis-server on port $port did not answer within 10s; see $DIR/$port/redis.log"
			sleep 0.1
		done
	done

	nodes=
	for port in $PORTS; do
		nodes="$nodes $HOST:$port"
	done
	say "creating the cluster:$nodes"
	# shellcheck disable=SC2086 # nodes is a list
	"$REDIS_CLI" --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 ||
		{ cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }

	for port in $PORTS; do
		i=0
		until cluster_ok "$port"; do
			i=$((i + 1))
			[ "$i" -le 300 ] || die "node $port not in cluster_state:ok within 30s: $(cli "$port" cluster info | head -1)"
			sleep 0.1
		done
	done
	say "cluster ready: RESCACHE_REDIS_CLUSTER_ADDRS=$HOST:7000,$HOST:7001,$HOST:7002"
}

stop() {
	pids=
	for port in $PORTS; do
		pidfile="$DIR/$port/redis.pid"
		if [ ! -f "$pidfile" ]; then
			say "no node of this script on port $port"
			continue
		fi
		pid=$(cat "$pidfile")
		say "stopping redis-server on $HOST:$port (pid $pid): SHUTDOWN NOSAVE"
		cli "$port" shutdown nosave >/dev/null 2>&1 || true
		pids="$pids $pid"
	done
	failed=no
	for pid in $pids; do
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1))
			if [ "$i" -gt 100 ]; then
				echo "cluster.sh: redis-server pid $pid did not exit within 10s of SHUTDOWN NOSAVE" >&2
				failed=yes
				break
			fi
			sleep 0.1
		done
	done
	[ "$failed" = no ] || exit 1
	if [ -d "$DIR" ]; then
		say "removing $DIR"
		rm -rf "$DIR"
	fi
}

case ${1:-} in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
