#!/usr/bin/env bash
# Draws the Grafana dashboard (deploy/grafana/sluice.json) over a real load
# run, for docs/operations.md: Sluice relays to sluice-sink under
# sluice-loadgen's load in three phases (1,000 msg/s, 3,000 msg/s, then as
# fast as it takes them), a real Prometheus (Debian's) scrapes /metrics every
# second, and benches/render_dashboard.py asks Prometheus each panel's own
# query and draws the panels where the dashboard puts them.
#
# Grafana itself is not packaged for Debian 12, and these machines reach no
# other download site: this is the same dashboard, drawn another way.
#
# usage: benches/dashboard.sh [--out FILE] [--no-build]
# Everything listens on loopback; every process started is stopped by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/docs/dashboard.svg"
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "dashboard.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dashboard.sh: %s\n' "$*" >&2; exit 1; }

PROMETHEUS=$(command -v prometheus || true)
if [ -z "$PROMETHEUS" ]; then
    [ "$(id -u)" = 0 ] || die "needs Debian's prometheus: sudo apt-get install prometheus"
    say "installing prometheus (Debian)"
    # The package's service must not start (it would take port 9090).
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    [ -z "$own_policy" ] || rm -f $policy
    PROMETHEUS=$(command -v prometheus) || die "prometheus did not install"
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p sluice -p sluice-loadgen)
fi
[ -f "$ROOT/plugins/dist/antispam.wasm" ] || "$ROOT/plugins/build.sh"

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
WORK=$(mktemp -d /tmp/sluice-dashboard.XXXXXX)
SMTP=$(free_port); SINK=$(free_port); METRICS=$(free_port); PROM=$(free_port)

"$BIN/sluice-sink" --listen "127.0.0.1:$SINK" --max-time 600 --interval 0 >"$WORK/sink.out" 2>&1 &
track $!
cat >"$WORK/sluice.toml" <<CONF
hostname = "sluice.bench.test"
spool_dir = "$WORK/spool"

[[listen]]
addr = "127.0.0.1:$SMTP"

[delivery]
smarthost = "127.0.0.1:$SINK"

[metrics]
listen = "127.0.0.1:$METRICS"
CONF
"$BIN/sluice" serve --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
track $!
wait_port "$SMTP" "${PIDS[-1]}" || die "sluice did not start: $(tail -3 "$WORK/sluice.log")"
cat >"$WORK/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ["127.0.0.1:$METRICS"]
CONF
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
track $!
wait_port "$PROM" "${PIDS[-1]}" || die "prometheus did not start: $(tail -3 "$WORK/prometheus.log")"

START=$(date +%s)
sleep 5
for phase in "--rate 1000 -d 20" "--rate 3000 -d 20" "-d 15"; do
    say "load: sluice-loadgen $phase"
    # shellcheck disable=SC2086 # the phase is a list of options
    timeout 120 "$BIN/sluice-loadgen" "127.0.0.1:$SMTP" -c 20 -s 4096 --quiet $phase \
        >"$WORK/loadgen.out" 2>&1 || say "warning: $(tail -2 "$WORK/loadgen.out")"
done
sleep 10
END=$(date +%s)
say "drawing $OUT from Prometheus ($((END - START)) s of data)"
python3 "$ROOT/benches/render_dashboard.py" "http://127.0.0.1:$PROM" \
    "$ROOT/deploy/grafana/sluice.json" "$START" "$END" 1 "$OUT"
say "done: $OUT"
