#!/usr/bin/env bash
# Sluice vs Postfix, side by side, on this machine: both relay everything to
# the same sink on loopback, under the same load.
#
#   benches/compare.sh                  # 20,000 messages of 4 KiB over 20 connections
#   benches/compare.sh -n 5000 -c 50    # other loads; --help for all options
#   benches/compare.sh --tls            # STARTTLS on every hop, both MTAs
#
# For each MTA it measures ingress msg/s (the generator's 250s), end-to-end
# msg/s (from the start of the load until the sink has counted every
# message), accept latency p50/p99, and the MTA's CPU seconds per 1,000
# messages (utime+stime of its whole process tree from /proc). Then an open
# loop at half of each MTA's own end-to-end rate (latency without queueing),
# and Postfix's smtp-source against both as a second opinion. Everything
# ends in ONE table, Sluice/Postfix ratios included, and an SVG chart.
#
# Both MTAs make a message durable before their 250: Sluice fdatasyncs its
# spool (group commit), Postfix fsyncs each queue file (its default).
#
# Traffic stays on 127.0.0.1. Every process this script starts is stopped
# by PID when it exits, however it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=20000
SIZE=4096
CONNECTIONS=20
RECIPIENTS=1
HALF_SECS=10
MTA_PORT=${MTA_PORT:-2525}
SINK_PORT=${SINK_PORT:-2626}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
OUT=""
BUILD=1
POSTFIX=1
SMTP_SOURCE=1
FILTERS=auto
TLS=0
PER_CONNECTION=""
DKIM=""
QUEUE_DIR=""

usage() {
    cat <<EOF
usage: benches/compare.sh [options]
  -n, --messages N       messages per run (default $MESSAGES)
  -s, --size OCTETS      message size, header block included (default $SIZE)
  -c, --connections C    concurrent connections, kept open (default $CONNECTIONS)
  -r, --recipients R     recipients per message, all in the sink's domain (default 1;
                         both MTAs then send each message in one transaction)
      --half-secs S      length of the open-loop runs at half rate (default $HALF_SECS)
  -o, --out DIR          where results go (default target/bench-compare/<UTC time>)
      --no-build         use the binaries already built
      --no-postfix       Sluice only
      --no-smtp-source   skip the smtp-source second opinion
      --filters WHICH    Sluice's filter chain: "shipped" (relay-refusal and antispam,
                         as with no [[plugin]] in the config; built with plugins/build.sh
                         when missing), "none" (plugin = []; the built-in relay check
                         stays), or "auto" (default: shipped if plugins/dist has them)
      --per-connection N messages per connection before the generator opens a new one
                         (default: connections kept for the whole run); with --tls,
                         1 puts a handshake in front of every message
      --dkim ALGORITHM   Sluice signs every message (the generator's From: is
                         bench.test) with a key made by `sluice dkim keygen`:
                         rsa or ed25519. Postfix does not sign (it has no DKIM)
      --queue-dir DIR    where both MTAs keep their queues (default /tmp): put it on
                         the file system to measure, e.g. a journaled ext4, where an
                         fdatasync costs more than on this machine's nojournal disk
      --tls              STARTTLS on every hop: the generator asks for it, both MTAs
                         offer it (same certificate) and use it to the sink at their
                         opportunistic level (Sluice: [delivery.tls] may; Postfix:
                         smtp_tls_security_level = may). smtp-source has no TLS: skipped
environment: MTA_PORT (default 2525), SINK_PORT (2626), RUN_TIMEOUT per run (240 s),
CARGO_TARGET_DIR (default target/)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
        -c|--connections) CONNECTIONS=$2; shift 2 ;;
        -r|--recipients) RECIPIENTS=$2; shift 2 ;;
        --half-secs) HALF_SECS=$2; shift 2 ;;
        -o|--out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-postfix) POSTFIX=0; shift ;;
        --no-smtp-source) SMTP_SOURCE=0; shift ;;
        --filters) FILTERS=$2; shift 2 ;;
        --tls) TLS=1; SMTP_SOURCE=0; shift ;;
        --dkim) DKIM=$2; shift 2 ;;
        --per-connection) PER_CONNECTION=$2; shift 2 ;;
        --queue-dir) QUEUE_DIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
OUT=${OUT:-$TARGET_DIR/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Spools and Postfix instances live here; Postfix's unprivileged processes
# must be able to walk into it.
WORK=$(mktemp -d "${QUEUE_DIR:-/tmp}/sluice-compare.XXXXXX")
chmod 755 "$WORK"

# ---------------------------------------------------------------------------
# Processes: every PID we start is recorded, and stopped on the way out.

PIDS=()
POSTFIX_DIRS=()

# A finished process's PID may be reused by someone else's: forget it.
untrack() { # PID
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Runs a command in the background and waits for it: bash runs a trap only
# between commands, so a signal to this script would otherwise wait for a
# foreground generator to finish; this way it is handled at once, and the
# command is stopped with everything else.
run_waited() { # OUTFILE COMMAND...
    local out=$1 pid rc=0
    shift
    "$@" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    untrack "$pid"
    return "$rc"
}

stop_pid() { # PID [seconds to wait before SIGKILL]
    local pid=$1 wait=${2:-10} i
    if ! kill -0 "$pid" 2>/dev/null; then
        untrack "$pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
}

postfix_master_pid() { # CONFIG_DIR
    local f
    f="$(postconf -c "$1" -h queue_directory)/pid/master.pid"
    [ -r "$f" ] && tr -d ' \n' <"$f"
}

stop_postfix() { # CONFIG_DIR
    local dir=$1 pid i
    pid=$(postfix_master_pid "$dir" || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    postfix -c "$dir" stop >/dev/null 2>&1 || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local pid dir
    for dir in "${POSTFIX_DIRS[@]}"; do stop_postfix "$dir"; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # PORT PID
    local i
    for ((i = 0; i < 300; i++)); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

now_ns() { date +%s%N; }

# ---------------------------------------------------------------------------
# Prerequisites: Postfix (for the peer, smtp-source and postconf) and the build.

SMTP_SOURCE_BIN=""
find_smtp_source() {
    local p
    for p in "$(command -v smtp-source 2>/dev/null || true)" /usr/sbin/smtp-source /usr/lib/postfix/smtp-source; do
        [ -n "$p" ] && [ -x "$p" ] && { SMTP_SOURCE_BIN=$p; return 0; }
    done
    return 1
}

if [ "$POSTFIX" = 1 ] || [ "$SMTP_SOURCE" = 1 ]; then
    export PATH=$PATH:/usr/sbin:/sbin
    if ! command -v postfix >/dev/null || ! find_smtp_source; then
        say "installing postfix from Debian (no configuration, not started as a service; it replaces another Debian MTA such as exim4)"
        as_root=""
        [ "$(id -u)" = 0 ] || as_root="sudo -n"
        echo "postfix postfix/main_mailer_type select No configuration" | $as_root debconf-set-selections \
            || die "cannot preseed debconf; install postfix yourself, or run with --no-postfix --no-smtp-source"
        $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null \
            || { $as_root apt-get update -q >/dev/null && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null; } \
            || die "cannot install postfix; run with --no-postfix --no-smtp-source to measure Sluice alone"
        find_smtp_source || die "postfix is installed but smtp-source is not found"
    fi
    [ "$(id -u)" = 0 ] || [ "$POSTFIX" = 0 ] || die "starting a private Postfix needs root (or use --no-postfix)"
fi

for port in "$MTA_PORT" "$SINK_PORT"; do
    port_open "$port" && die "127.0.0.1:$port is in use; set MTA_PORT / SINK_PORT"
done

if [ "$BUILD" = 1 ]; then
    say "building sluice and the load tools (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet -p sluice -p sluice-loadgen)
fi
for b in sluice sluice-loadgen sluice-sink sluice-bench; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (run without --no-build)"
done

# Sluice's filter chain. Postfix runs only its relay restrictions; Sluice's
# shipped chain does that (relay-refusal) and more (antispam, which skips
# most checks for trusted clients like these), so "shipped" is Sluice as an
# operator gets it, and "none" the closest match to this Postfix.
SHIPPED_PLUGINS=(relay-refusal antispam)
have_plugins() {
    local p
    for p in "${SHIPPED_PLUGINS[@]}"; do [ -f "$ROOT/plugins/dist/$p.wasm" ] || return 1; done
}
case "$FILTERS" in
    auto) if have_plugins; then FILTERS=shipped; else
              say "plugins/dist has no shipped plugins (plugins/build.sh builds them): Sluice runs with no filters"
              FILTERS=none
          fi ;;
    shipped) have_plugins || { say "building the shipped plugins"; "$ROOT/plugins/build.sh" >/dev/null; }
             have_plugins || die "plugins/build.sh did not produce ${SHIPPED_PLUGINS[*]}" ;;
    none) ;;
    *) die "--filters takes shipped, none or auto, not $FILTERS" ;;
esac

# One certificate for every TLS endpoint: the sink, Sluice and Postfix.
# Self-signed: the generator and both MTAs' opportunistic TLS do not verify.
TLS_CERT=$WORK/tls/cert.pem
TLS_KEY=$WORK/tls/key.pem
if [ "$TLS" = 1 ]; then
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
        -keyout "$TLS_KEY" -out "$TLS_CERT" >/dev/null 2>&1 || die "openssl could not make a certificate"
    chmod 644 "$TLS_KEY"
fi
TLS_SINK=()
GEN_EXTRA=()
[ "$TLS" = 0 ] || { TLS_SINK=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY"); GEN_EXTRA=(--tls); }
[ -z "$PER_CONNECTION" ] || GEN_EXTRA+=(--per-connection "$PER_CONNECTION")

CLK_TCK=$(getconf CLK_TCK)
KERNEL=$(uname -r)
CPUS=$(nproc)
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
POSTFIX_VERSION=$( [ "$POSTFIX" = 1 ] && postconf -d -h mail_version 2>/dev/null || echo "-")

# ---------------------------------------------------------------------------
# The sink and the two MTAs.

SINK_PID=""
start_sink() { # DIR COUNT
    local dir=$1 count=$2
    "$BIN/sluice-sink" --listen "127.0.0.1:$SINK_PORT" --count "$count" \
        --json "$dir/sink.json" --hgrm "$dir/end-to-end.hgrm" \
        --max-time "$RUN_TIMEOUT" --interval 0 "${TLS_SINK[@]}" >"$dir/sink.out" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_port "$SINK_PORT" "$SINK_PID" || die "the sink did not start: $(cat "$dir/sink.out")"
}

# Waits for the sink to count every message (it exits then) or give up.
finish_sink() {
    local rc=0
    wait "$SINK_PID" || rc=$?
    untrack "$SINK_PID"
    [ "$rc" = 0 ] || say "warning: the sink did not count every message within ${RUN_TIMEOUT}s (exit $rc)"
}

MTA_PID=""
MTA_STOP=""
start_sluice() { # DIR
    local dir=$1
    mkdir -p "$dir/spool"
    local p
    {
        echo 'hostname = "sluice.bench.test"'
        echo "spool_dir = \"$dir/spool\""
        [ "$FILTERS" = shipped ] || echo 'plugin = []'
        echo
        echo '[[listen]]'
        echo "addr = \"127.0.0.1:$MTA_PORT\""
        echo
        echo '[delivery]'
        echo "smarthost = \"127.0.0.1:$SINK_PORT\""
        if [ "$TLS" = 1 ]; then
            printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_CERT" "$TLS_KEY"
            printf '\n[delivery.tls]\nsecurity_level = "may"\nmta_sts = false\n'
        fi
        if [ -n "$DKIM" ]; then
            [ -f "$WORK/dkim.key" ] || "$BIN/sluice" dkim keygen --domain bench.test \
                --selector bench --algorithm "$DKIM" --out "$WORK/dkim.key" >/dev/null ||
                die "cannot make a DKIM key"
            local alg=rsa-sha256
            [ "$DKIM" = ed25519 ] && alg=ed25519-sha256
            printf '\n[[dkim]]\ndomain = "bench.test"\nselector = "bench"\nkey = "%s"\nalgorithm = "%s"\n' \
                "$WORK/dkim.key" "$alg"
        fi
        if [ "$FILTERS" = shipped ]; then
            for p in "${SHIPPED_PLUGINS[@]}"; do
                printf '\n[[plugin]]\nname = "%s"\npath = "%s"\n' "$p" "$ROOT/plugins/dist/$p.wasm"
            done
        fi
    } >"$dir/sluice.toml"
    "$BIN/sluice" serve --config "$dir/sluice.toml" >"$dir/sluice.log" 2>&1 &
    MTA_PID=$!
    PIDS+=("$MTA_PID")
    MTA_STOP="stop_pid $MTA_PID 20"
    wait_port "$MTA_PORT" "$MTA_PID" || die "sluice did not start: $(tail -5 "$dir/sluice.log")"
}

# A private Postfix instance, set up as in shared/research/peers-measured.md:
# its own config and queue directories, relaying everything to the sink,
# TLS off, chroot off, default durability.
start_postfix() { # DIR
    local dir=$1 conf=$1/postfix/etc
    mkdir -p "$conf" "$dir/postfix/queue" "$dir/postfix/data"
    chmod 755 "$dir" "$dir/postfix"
    cp /etc/postfix/master.cf "$conf/master.cf"
    : >"$conf/main.cf"
    postconf -c "$conf" -e \
        "compatibility_level = 3.6" \
        "queue_directory = $dir/postfix/queue" \
        "data_directory = $dir/postfix/data" \
        "myhostname = postfix.bench.test" \
        "mydestination =" "relay_domains =" "local_recipient_maps =" \
        "inet_interfaces = 127.0.0.1" "inet_protocols = ipv4" \
        "mynetworks = 127.0.0.0/8" \
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
        "smtpd_peername_lookup = no" \
        "relayhost = [127.0.0.1]:$SINK_PORT" \
        "smtp_dns_support_level = disabled" "smtp_host_lookup = native" \
        "smtpd_tls_security_level = none" "smtp_tls_security_level = none" \
        "maillog_file_prefixes = /var, /dev/stdout, /tmp" \
        "maillog_file = $dir/postfix/maillog" \
        "message_size_limit = 104857600" \
        "smtp_destination_recipient_limit = 1000"
    if [ "$TLS" = 1 ]; then
        postconf -c "$conf" -e \
            "smtpd_tls_security_level = may" "smtp_tls_security_level = may" \
            "smtpd_tls_cert_file = $TLS_CERT" "smtpd_tls_key_file = $TLS_KEY"
    fi
    postconf -c "$conf" -F '*/*/chroot = n'
    postconf -c "$conf" -M# smtp/inet
    postconf -c "$conf" -M "127.0.0.1:$MTA_PORT/inet = 127.0.0.1:$MTA_PORT inet n - n - - smtpd"
    chown postfix "$dir/postfix/data"
    POSTFIX_DIRS+=("$conf")
    postfix -c "$conf" start >"$dir/postfix.start.log" 2>&1 \
        || die "postfix did not start: $(cat "$dir/postfix.start.log")"
    MTA_PID=$(postfix_master_pid "$conf") || die "no master.pid for postfix"
    MTA_STOP="stop_postfix $conf"
    wait_port "$MTA_PORT" "$MTA_PID" || die "postfix does not listen on $MTA_PORT"
}

write_run_json() { # DIR MTA GENERATOR MESSAGES START END CPU0 CPU1
    cat >"$1/run.json" <<EOF
{"mta": "$2", "generator": "$3", "messages": $4,
 "gen_start_unix_ns": $5, "gen_end_unix_ns": $6,
 "cpu_ticks_before": $7, "cpu_ticks_after": $8, "clk_tck": $CLK_TCK}
EOF
}

# One run: sink, MTA (or none), generator, wait for the sink, CPU, stop.
# run NAME MTA GENERATOR [RATE]
run() {
    local name=$1 mta=$2 gen=$3 rate=${4:-} dir=$OUT/$1 count=$MESSAGES port cpu0=null cpu1=null t0 t1
    mkdir -p "$dir"
    rm -f "$dir"/*.json
    if [ -n "$rate" ]; then
        count=$(awk -v r="$rate" -v s="$HALF_SECS" 'BEGIN { printf "%d", r * s }')
    fi
    start_sink "$dir" "$count"
    port=$SINK_PORT
    case "$mta" in
        sluice) start_sluice "$WORK/$name"; port=$MTA_PORT ;;
        postfix) start_postfix "$WORK/$name"; port=$MTA_PORT ;;
        none) MTA_PID="" ;;
    esac
    [ -z "$MTA_PID" ] || cpu0=$("$BIN/sluice-bench" cpu-ticks "$MTA_PID")
    SAMPLER_PID=""
    if [ "$mta" = sluice ] && [ -n "$MTA_PID" ]; then
        "$BIN/sluice-bench" peak-anon "$MTA_PID" "$dir/peak-anon-kib" &
        SAMPLER_PID=$!
        PIDS+=("$SAMPLER_PID")
    fi
    say "$name: $count messages → ${mta/none/the sink directly} (${gen}${rate:+, open loop at $rate msg/s})"
    t0=$(now_ns)
    case "$gen" in
        sluice-loadgen)
            local extra=()
            [ -z "$rate" ] || extra=(--rate "$rate" --hgrm-due "$dir/from-due.hgrm")
            run_waited "$dir/loadgen.out" timeout "$RUN_TIMEOUT" "$BIN/sluice-loadgen" \
                "127.0.0.1:$port" -n "$count" -c "$CONNECTIONS" -s "$SIZE" -r "$RECIPIENTS" --quiet \
                --json "$dir/loadgen.json" --hgrm "$dir/accept.hgrm" "${extra[@]}" "${GEN_EXTRA[@]}" \
                || say "warning: sluice-loadgen: $(tail -3 "$dir/loadgen.out")"
            ;;
        smtp-source)
            run_waited "$dir/smtp-source.out" timeout "$RUN_TIMEOUT" "$SMTP_SOURCE_BIN" \
                -s "$CONNECTIONS" -m "$count" -l "$SIZE" -r "$RECIPIENTS" -d \
                -f loadgen@bench.test -t rcpt0@remote.test "127.0.0.1:$port" \
                || say "warning: smtp-source: $(tail -3 "$dir/smtp-source.out")"
            ;;
    esac
    t1=$(now_ns)
    finish_sink
    [ -z "$MTA_PID" ] || cpu1=$("$BIN/sluice-bench" cpu-ticks "$MTA_PID" || echo null)
    # Sluice is one process: its peak resident memory over the run (Postfix's
    # many processes have no single figure), all of it (VmHWM: the spool's
    # mapped segments count) and the anonymous part (sampled).
    if [ "$mta" = sluice ] && [ -n "$MTA_PID" ]; then
        awk '/^VmHWM:/ { print $2 }' "/proc/$MTA_PID/status" >"$dir/peak-rss-kib" 2>/dev/null || true
    fi
    if [ -n "${SAMPLER_PID:-}" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        untrack "$SAMPLER_PID"
        SAMPLER_PID=""
    fi
    [ -z "$MTA_PID" ] || $MTA_STOP
    write_run_json "$dir" "$mta" "$gen" "$count" "$t0" "$t1" "$cpu0" "$cpu1"
}

half_rate() { # RUN_DIR → half its end-to-end msg/s, at least 1
    awk -v r="$("$BIN/sluice-bench" e2e-rate "$1" 2>/dev/null || echo 2)" 'BEGIN { h = int(r / 2); print (h < 1 ? 1 : h) }'
}

# ---------------------------------------------------------------------------

START=$(date +%s)
# Other work on the machine skews everything: say how busy it was.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "results in $OUT"
say "queues in $WORK: $(findmnt -no FSTYPE,OPTIONS -T "$WORK" 2>/dev/null || echo 'file system unknown')"
say "both MTAs make every message durable before answering 250 (Sluice: fdatasync, group commit; Postfix: fsync of the queue file, its default)"

run ceiling none sluice-loadgen
[ "$SMTP_SOURCE" = 0 ] || run ceiling-smtp-source none smtp-source

MTAS=(sluice)
[ "$POSTFIX" = 0 ] || MTAS+=(postfix)
for mta in "${MTAS[@]}"; do
    run "$mta" "$mta" sluice-loadgen
    run "$mta-half-rate" "$mta" sluice-loadgen "$(half_rate "$OUT/$mta")"
    [ "$SMTP_SOURCE" = 0 ] || run "$mta-smtp-source" "$mta" smtp-source
done

TLS_NOTE=""
[ "$TLS" = 0 ] || TLS_NOTE=", STARTTLS on every hop"
[ -z "$PER_CONNECTION" ] || TLS_NOTE+=", $PER_CONNECTION msg(s) per connection"
SUBTITLE="$MESSAGES msgs of $SIZE octets over $CONNECTIONS connections$TLS_NOTE; Sluice filters: $FILTERS; $CPUS cores, Linux $KERNEL; Postfix $POSTFIX_VERSION; $DATE"
"$BIN/sluice-bench" report "$OUT" --svg "$OUT/compare.svg" --subtitle "$SUBTITLE" >"$OUT/table.md"

echo
echo "Sluice vs Postfix relaying to one sink on 127.0.0.1 ($DATE)"
echo "Load: $MESSAGES messages of $SIZE octets over $CONNECTIONS connections kept open;"
echo "half rate: open loop for ${HALF_SECS}s at half of each MTA's own end-to-end rate."
echo "Sluice's filter chain: $FILTERS$( [ "$FILTERS" = shipped ] && echo " (${SHIPPED_PLUGINS[*]})")."
[ "$TLS" = 0 ] || echo "TLS: STARTTLS generator → MTA → sink (ECDSA P-256; opportunistic, unverified, at both MTAs)."
echo "Machine: $CPUS cores, Linux $KERNEL; generator, MTA and sink share them."
[ ! -s "$OUT/sluice/peak-rss-kib" ] || echo "Sluice's peak resident memory in its full-rate run: $(cat "$OUT/sluice/peak-rss-kib") KiB in all (VmHWM, the spool's mapped segments included), $(cat "$OUT/sluice/peak-anon-kib" 2>/dev/null || echo '?') KiB anonymous (RssAnon, sampled every 50 ms)."
echo "Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Both MTAs fsync before 250: Sluice fdatasyncs its spool (group commit), Postfix"
echo "fsyncs each queue file (default durability)."
echo
cat "$OUT/table.md"
echo
echo "Chart: $OUT/compare.svg    Raw results (JSON, .hgrm, logs): $OUT"
echo "Took $(( $(date +%s) - START )) s."
