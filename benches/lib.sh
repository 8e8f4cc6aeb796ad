# Shared by the bench kit's smaller scripts (dashboard.sh, queue_scale.sh,
# idle_memory.sh): sourced, not run. Every process a script starts goes
# through `track`, and the EXIT trap stops each by its PID and removes WORK.

PIDS=()
WORK=""

# Remembers a PID to stop on the way out.
track() { PIDS+=("$1"); }

# Stops every tracked process (SIGTERM, then waits for each).
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

stop_all() {
    stop_pids
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap stop_all EXIT

# A loopback port nobody listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most SECS, default 30) until something accepts on PORT; fails
# early when PID (if given) has exited.
wait_port() { # PORT [PID] [SECS]
    local i
    for ((i = 0; i < ${3:-30} * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
