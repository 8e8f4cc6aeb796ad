#!/usr/bin/env bash
# A big queue: with the next hop down, accept N messages of 4 KiB (default
# 1,000,000), then measure what an operator lives with:
#
#   1. the accept rate while the queue grows;
#   2. anonymous memory per queued message (RssAnon / N);
#   3. `sluice queue summary` and `sluice queue list` times on the live spool;
#   4. restart after kill -9: seconds until the server accepts mail again;
#   5. anonymous memory per message after that restart;
#   6. the next hop comes back (`sluice queue flush --all`): the drain rate;
#   7. memory after the drain (is it given back?).
#
# usage: benches/queue_scale.sh [-n N] [--no-build]
# Needs about 5 KiB of disk per message in the spool; scales N down (and says
# so) when the disk has less. Loopback only; every process stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=1000000
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) N=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "queue_scale.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'queue_scale.sh: %s\n' "$*" >&2; exit 1; }
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ "$BUILD" = 0 ] || (cd "$ROOT" && cargo build --release --quiet -p sluice -p sluice-loadgen)

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
WORK=$(mktemp -d /tmp/sluice-queue.XXXXXX)
# Disk: ~4.4 KiB per message in the spool, and room to spare.
free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
fits=$(( free_kib / 6 ))
if [ "$N" -gt "$fits" ]; then
    say "only $((free_kib / 1024)) MiB free under $WORK: scaling down from $N to $fits messages"
    N=$fits
fi

now() { date +%s.%N; }
anon_kib() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }
SMTP=$(free_port); HOP=$(free_port)
cat >"$WORK/sluice.toml" <<CONF
hostname = "sluice.bench.test"
spool_dir = "$WORK/spool"
plugin = []

[[listen]]
addr = "127.0.0.1:$SMTP"

[delivery]
smarthost = "127.0.0.1:$HOP"
# The next hop is down: one try, then not again within the measurement.
retry_schedule_secs = [86400]

[metrics]
listen = ""

[sendmail]
enabled = false
CONF
SERVER=""
START_SECS=""
# Starts the server in this shell (so that its PID is ours to stop) and sets
# START_SECS to how long it took to accept connections.
start_server() {
    local t0
    t0=$(now)
    "$BIN/sluice" serve --config "$WORK/sluice.toml" >>"$WORK/sluice.log" 2>&1 &
    SERVER=$!
    track "$SERVER"
    # A big queue takes a while to recover.
    wait_port "$SMTP" "$SERVER" 300 || die "sluice did not start: $(tail -3 "$WORK/sluice.log")"
    START_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
}

start_server
base_anon=$(anon_kib "$SERVER")
say "accepting $N messages with the next hop down"
t0=$(now)
timeout 7200 "$BIN/sluice-loadgen" "127.0.0.1:$SMTP" -n "$N" -c 20 -s 4096 --quiet \
    --json "$WORK/loadgen.json" >"$WORK/loadgen.out" 2>&1 || die "loadgen: $(tail -3 "$WORK/loadgen.out")"
t1=$(now)
sleep 5
full_anon=$(anon_kib "$SERVER")
accept_rate=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')

timed() { # COMMAND... → seconds
    local a b
    a=$(now)
    "$@" >/dev/null
    b=$(now)
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }'
}
summary_secs=$(timed "$BIN/sluice" queue summary --spool "$WORK/spool")
list_secs=$(timed "$BIN/sluice" queue list --spool "$WORK/spool")

say "kill -9 and restart"
kill -9 "$SERVER"
wait "$SERVER" 2>/dev/null || true
start_server
restart_secs=$START_SECS
sleep 5
restart_anon=$(anon_kib "$SERVER")

say "the next hop comes back"
"$BIN/sluice-sink" --listen "127.0.0.1:$HOP" --count "$N" --max-time 7200 --interval 0 \
    >"$WORK/sink.out" 2>&1 &
SINK=$!
track "$SINK"
sleep 1
t0=$(now)
"$BIN/sluice" queue flush --all --spool "$WORK/spool" >/dev/null
wait "$SINK" || say "warning: the sink did not get all $N messages"
t1=$(now)
drain_rate=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
sleep 10
drained_anon=$(anon_kib "$SERVER")

per() { awk -v x="$1" -v b="$base_anon" -v n="$N" 'BEGIN { printf "%.0f", (x - b) * 1024 / n }'; }
cat <<EOF

Queue of $N messages of 4 KiB, next hop down (one connection attempt each,
retry in a day), $(nproc) cores, load average before/after: see below.

| | measured |
|---|---:|
| accept rate while the queue grows | $accept_rate msg/s |
| anonymous memory per queued message | $(per "$full_anon") bytes |
| \`sluice queue summary\` | $summary_secs s |
| \`sluice queue list\` | $list_secs s |
| restart after kill -9 until it accepts mail | $restart_secs s |
| anonymous memory per queued message after the restart | $(per "$restart_anon") bytes |
| drain rate once the next hop is back | $drain_rate msg/s |
| anonymous memory after the drain (idle server: $base_anon KiB) | $drained_anon KiB |

Load average now: $(cut -d' ' -f1-3 /proc/loadavg).
EOF
