#!/usr/bin/env python3
"""The per-message budget: what one relayed 4 KiB message costs Sluice.

Runs the release server (built with --features count-allocations) with the
default filter chain, relaying to sluice-sink under sluice-loadgen's load
(20 connections, 4 KiB), under `strace -f`, twice: with SMALL and with LARGE
messages. What the larger run spends beyond the smaller one, divided by the
difference in messages, is the cost of one message: start-up, shutdown and
idle time cancel out. Reported per message:

- system calls by kind, split by the threads that made them: the way in
  (event loops, filter and check workers, the spool writer) and the way out
  (scheduler, delivery threads);
- fdatasync shares (fdatasyncs per message: the group commit's batching);
- thread hand-offs: futex wake-ups and event-loop wake-ups (writes to an
  eventfd), the two ways one thread tells another there is work;
- heap allocations and bytes, from the count-allocations build's counters
  on /metrics.

With --callgrind N it also runs the server under valgrind's callgrind, with
N and with 4N messages, and prints where one message's instructions go (the
difference again, self cost by function and by crate).

The server logs at `warn` (no line per message) unless --log says otherwise:
--log info counts the two lines a message (the transaction, each delivery)
that a server at its default level writes.

Everything listens on loopback; every process started is stopped by its PID.

usage: benches/budget.py [--small N] [--large N] [--callgrind N] [--no-build] [--log LEVEL]
                         [--keep-profiles DIR] [--out FILE]
"""

import argparse
import collections
import os
import re
import signal
import socket
import subprocess
import shutil
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "budget")
BIN = os.path.join(TARGET, "release")

# Thread names (comm, at most 15 characters) and the side they work for.
# The spool writer serves both: submissions on the way in, the journal of
# delivery outcomes on the way out.
IN_PREFIXES = ("smtpd-", "sluice-filter", "sluice-plugin")
OUT_PREFIXES = ("scheduler", "delivery-", "smtp-reaper", "tokio")
SIDES = ("in", "spool", "out", "other")


def say(*args):
    print("==>", *args, file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def stop(proc, limit=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def side(name):
    if name.startswith("spool-writer"):
        return "spool"
    if name.startswith(IN_PREFIXES):
        return "in"
    if name.startswith(OUT_PREFIXES):
        return "out"
    return "other"


SYSCALL = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")


def parse_trace(path, names):
    """Counts by (side, syscall), plus futex wakes and eventfd writes."""
    counts = collections.Counter()
    eventfds = set()
    for line in open(path, errors="replace"):
        m = SYSCALL.match(line)
        if not m:
            continue
        tid, call = int(m.group(1)), m.group(2)
        if line[len(m.group(1)):].lstrip().startswith("<..."):
            continue  # the second half of an interrupted call: counted once
        who = side(names.get(tid, "?"))
        counts[(who, call)] += 1
        if call == "eventfd2":
            ret = line.rsplit("=", 1)[-1].strip().split()[0]
            if ret.isdigit():
                eventfds.add(int(ret))
        if call == "futex" and "FUTEX_WAKE" in line:
            counts[(who, "futex wake")] += 1
        if call == "write":
            fd = line.split("write(", 1)[1].split(",", 1)[0]
            if fd.isdigit() and int(fd) in eventfds:
                counts[(who, "wake-up (eventfd write)")] += 1
    return counts


def thread_names(pid):
    names = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                names[int(tid)] = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError:
                pass
    except OSError:
        pass
    return names


def server_config(work, smtp, sink, metrics):
    path = os.path.join(work, "sluice.toml")
    with open(path, "w") as f:
        f.write(f'''hostname = "sluice.bench.test"
spool_dir = "{work}/spool"

[[listen]]
addr = "127.0.0.1:{smtp}"

[delivery]
smarthost = "127.0.0.1:{sink}"

[metrics]
listen = "127.0.0.1:{metrics}"

[sendmail]
enabled = false
''')
    return path


LOG_LEVEL = "warn"


def one_run(messages, wrapper, work):
    """Relays `messages` through a fresh server run under `wrapper`."""
    smtp, sink_port, metrics = free_port(), free_port(), free_port()
    run_dir = tempfile.mkdtemp(dir=work)
    config = server_config(run_dir, smtp, sink_port, metrics)
    sink = subprocess.Popen(
        [os.path.join(BIN, "sluice-sink"), "--listen", f"127.0.0.1:{sink_port}",
         "--count", str(messages), "--max-time", "900", "--interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(os.path.join(run_dir, "sluice.log"), "w")
    pid = None
    server = subprocess.Popen(wrapper + [os.path.join(BIN, "sluice"), "serve", "--config", config],
                              stdout=log, stderr=log, env=dict(os.environ, SLUICE_LOG=LOG_LEVEL))
    try:
        wait_port(smtp, server, limit=300)
        wait_port(metrics, server, limit=60)
        before = scrape(metrics)
        # The server's own PID: strace runs it as its child (valgrind in
        # its own process).
        pid = server.pid
        for child in open(f"/proc/{server.pid}/task/{server.pid}/children").read().split():
            pid = int(child)
        gen = subprocess.run(
            [os.path.join(BIN, "sluice-loadgen"), f"127.0.0.1:{smtp}", "-n", str(messages),
             "-c", "20", "-s", "4096", "--quiet", "--timeout", "300"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
        if gen.returncode != 0:
            raise RuntimeError(f"sluice-loadgen: {gen.stderr.decode()[-300:]}")
        sink.wait(timeout=900)
        after = scrape(metrics)
        names = thread_names(pid)
    finally:
        # The server itself first: SIGTERM to strace would only detach it
        # and leave it running.
        if pid is not None and pid != server.pid:
            try:
                os.kill(pid, signal.SIGTERM)
                server.wait(timeout=300)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(server, limit=300)
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    return run_dir, before, after, names


def per_message(small, large, n_small, n_large):
    n = n_large - n_small
    keys = set(small) | set(large)
    return {k: (large.get(k, 0) - small.get(k, 0)) / n for k in keys}


def budget(args, work):
    traces = {}
    allocs = {}
    for n in (args.small, args.large):
        say(f"run: {n} messages under strace")
        trace = os.path.join(work, f"trace-{n}.txt")
        run_dir, before, after, names = one_run(
            n, ["strace", "-f", "-qq", "-o", trace], work)
        traces[n] = parse_trace(trace, names)
        allocs[n] = {
            "allocations": after.get("sluice_heap_allocations_total", 0)
            - before.get("sluice_heap_allocations_total", 0),
            "bytes": after.get("sluice_heap_allocated_bytes_total", 0)
            - before.get("sluice_heap_allocated_bytes_total", 0),
        }
    calls = per_message(traces[args.small], traces[args.large], args.small, args.large)
    heap = per_message(allocs[args.small], allocs[args.large], args.small, args.large)
    out = []
    out.append(f"Per relayed 4 KiB message ({args.large} − {args.small} messages, "
               "20 connections, default filters, fdatasync before every 250):\n")
    out.append("| system call | way in (event loops, filters) | spool writer | "
               "way out (scheduler, delivery) | other |")
    out.append("|---|---:|---:|---:|---:|")
    kinds = sorted({k[1] for k in calls}, key=lambda c: -sum(
        calls.get((s, c), 0) for s in SIDES))
    special = ("futex wake", "wake-up (eventfd write)")
    total = collections.Counter()
    for kind in kinds:
        if kind in special:
            continue
        row = [calls.get((s, kind), 0) for s in SIDES]
        if sum(row) < 0.05:
            continue
        for s, v in zip(SIDES, row):
            total[s] += v
        out.append(f"| `{kind}` | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    out.append("| **all** | " + " | ".join(f"**{total[s]:.1f}**" for s in SIDES) + " |")
    out.append("")
    fsync = sum(calls.get((s, "fdatasync"), 0) for s in SIDES)
    out.append(f"- fdatasync per message: {fsync:.3f} (one group commit serves "
               f"{1 / fsync if fsync else float('inf'):.1f} submissions; the way out's "
               "journal of outcomes shares them too)")
    for kind in special:
        row = [calls.get((s, kind), 0) for s in SIDES]
        out.append(f"- {kind}s per message: " + ", ".join(
            f"{s} {v:.2f}" for s, v in zip(SIDES, row)))
    out.append(f"- heap allocations per message: {heap['allocations']:.0f} "
               f"({heap['bytes'] / 1024:.1f} KiB asked for)")
    return "\n".join(out)


FUNCTION_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def profile(path):
    """Self cost (instructions) by function, from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", path],
        capture_output=True, text=True, timeout=600).stdout
    costs = collections.Counter()
    for line in text.splitlines():
        m = FUNCTION_LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        where = m.group(2)
        obj = re.search(r"\[([^\]]+)\]\s*$", where)
        name = re.sub(r"\s*\[[^\]]+\]\s*$", "", where)
        name = name.split(":", 1)[1] if ":" in name else name
        if obj and "/sluice" not in obj.group(1):
            name = f"{name} ({os.path.basename(obj.group(1))})"
        costs[name] += int(m.group(1).replace(",", ""))
    return costs


def owner(function):
    """The crate (or library) a function belongs to, for the summary."""
    m = re.search(r"\(([^()]+\.so[^()]*)\)$", function)
    if m:
        return m.group(1).split(".so")[0]
    m = re.match(r"[<&*\s]*([A-Za-z_][A-Za-z_0-9]*)", function)
    return m.group(1) if m else "?"


def callgrind(args, work):
    small, large = args.callgrind, args.callgrind * 4
    costs = {}
    for n in (small, large):
        say(f"run: {n} messages under callgrind (slow)")
        out_file = os.path.join(work, f"callgrind-{n}.out")
        one_run(n, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"], work)
        costs[n] = profile(out_file)
        if args.keep_profiles:
            os.makedirs(args.keep_profiles, exist_ok=True)
            shutil.copy(out_file, args.keep_profiles)
    per = {f: (costs[large].get(f, 0) - costs[small].get(f, 0)) / (large - small)
           for f in set(costs[small]) | set(costs[large])}
    total = sum(v for v in per.values() if v > 0)
    out = [f"\nWhere the CPU goes: instructions per message ({large} − {small} messages "
           f"under callgrind, self cost; start-up cancels out; the server logging at "
           f"`{LOG_LEVEL}`): **{total:,.0f}** in all.\n",
           "| share | instructions | function |", "|---:|---:|---|"]
    for f, v in sorted(per.items(), key=lambda kv: -kv[1])[:25]:
        out.append(f"| {100 * v / total:.1f} % | {v:,.0f} | `{f[:100]}` |")
    by_owner = collections.Counter()
    for f, v in per.items():
        by_owner[owner(f)] += v
    out += ["", "| share | crate or library |", "|---:|---|"]
    for o, v in by_owner.most_common(15):
        out.append(f"| {100 * v / total:.1f} % | `{o}` |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--large", type=int, default=4000)
    p.add_argument("--callgrind", type=int, default=0, metavar="N")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-strace", action="store_true", help="only the callgrind part")
    p.add_argument("--keep-profiles", metavar="DIR",
                   help="copy callgrind's profiles here (for callgrind_annotate)")
    p.add_argument("--out", default=os.path.join(TARGET, "budget.md"))
    p.add_argument("--log", default="warn", choices=["warn", "info"],
                   help="the server's log level (info: a line per transaction and delivery)")
    args = p.parse_args()
    global LOG_LEVEL
    LOG_LEVEL = args.log
    if not args.no_build:
        say("building the release binaries with count-allocations into target/budget")
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "sluice",
                        "--features", "count-allocations", "-p", "sluice-loadgen"],
                       cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    if not os.path.exists(os.path.join(ROOT, "plugins/dist/antispam.wasm")):
        subprocess.run([os.path.join(ROOT, "plugins/build.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="sluice-budget.") as work:
        text = "" if args.no_strace else budget(args, work)
        if args.callgrind:
            text += "\n" + callgrind(args, work)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(text)


main()
