#!/usr/bin/env bash
# Memory per idle connection, plain and inside TLS, at COUNT connections
# (default 10,000): starts the release server with a self-signed certificate
# and limits that allow COUNT clients from one address, runs
# benches/idle_memory.py against it, and stops it by PID.
#
# usage: benches/idle_memory.sh [COUNT]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT=${1:-10000}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ -x "$BIN/sluice" ] || (cd "$ROOT" && cargo build --release --quiet -p sluice)
# The client holds COUNT sockets and the server COUNT plus its own files.
ulimit -n $((COUNT * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((COUNT + 500)) ] || {
    echo "idle_memory.sh: the open-file limit ($(ulimit -n)) is too low for $COUNT connections" >&2
    exit 1
}
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
WORK=$(mktemp -d /tmp/sluice-idle.XXXXXX)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=idle.bench.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
PORT=$(free_port)
cat >"$WORK/sluice.toml" <<CONF
spool_dir = "$WORK/spool"
plugin = []

[[listen]]
addr = "127.0.0.1:$PORT"

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[limits]
max_connections = $((COUNT + 100))
max_connections_per_ip = $((COUNT + 100))

[metrics]
listen = ""

[sendmail]
enabled = false
CONF
# A fresh server for each mode: memory the first run freed would otherwise
# be reused by the second and hide part of its cost.
for mode in plain tls; do
    "$BIN/sluice" serve --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
    SERVER=$!
    track "$SERVER"
    wait_port "$PORT" "$SERVER" || { echo "idle_memory.sh: sluice did not start" >&2; exit 1; }
    python3 "$ROOT/benches/idle_memory.py" 127.0.0.1 "$PORT" "$SERVER" "$COUNT" "$mode" |
        { [ "$mode" = plain ] && cat || grep -v '^idle'; }
    stop_pids
done
