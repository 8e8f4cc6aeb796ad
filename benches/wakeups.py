#!/usr/bin/env python3
"""Where a relayed message's CPU and wake-ups go, per thread of the server.

Runs the release server (shipped filter chain, fdatasync before every `250`)
relaying to sluice-sink under sluice-loadgen's closed loop (20 connections,
4 KiB), warms it up, then reads every thread's context switches and CPU ticks
from /proc before and after N more messages. Printed per message, by thread
group (the event loops, the spool writer, the scheduler, the delivery threads,
...):

- voluntary context switches: the thread went to sleep (waiting for work, a
  reply, a disk), and something had to wake it: a hand-off;
- involuntary ones: the thread was preempted (two shared cores);
- CPU microseconds (utime + stime).

The budget (benches/budget.py) counts system calls with strace, which slows
the server and hides what wake-ups cost; this runs it at full speed. Numbers
move with the machine's load: compare two builds in alternating runs.

Everything listens on loopback; every process started is stopped by its PID.

With `--perf FILE`, `perf record` samples the server (call graphs) during
the measured messages and writes FILE for `perf report`.

usage: benches/wakeups.py [-n N] [--bin DIR] [--dkim ed25519|rsa] [--extra TOML] [--perf FILE]
"""

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("relay-refusal", "antispam")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spool_counters(port):
    """The spool's counters from /metrics (segments by origin under their label)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'(sluice_(?:spool|accept)_\w+?)(?:\{origin="(\w+)"\})? ([0-9.e+]+)$', line)
        if m:
            out[m.group(2) or m.group(1)] = float(m.group(3))
    return out


def threads(pid):
    """Per thread: (group name, voluntary, involuntary, CPU ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        name = re.search(r"^Name:\s*(.*)$", status, re.M).group(1)
        group = re.sub(r"[-_]?\d+$", "", name)
        vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (group, vol, invol, int(fields[11]) + int(fields[12]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--messages", type=int, default=30000)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release"),
                   help="where sluice, sluice-sink and sluice-loadgen are (built with "
                   "cargo build --release)")
    p.add_argument("--plugins", default=os.path.join(ROOT, "plugins", "dist"),
                   help="where the shipped plugins' .wasm files are (plugins/build.sh)")
    p.add_argument("--dkim", choices=("ed25519", "rsa"),
                   help="sign every message (the generator's From: is bench.test)")
    p.add_argument("--extra", default="", help="TOML appended to the configuration")
    p.add_argument("--perf", metavar="FILE", help="perf record the measured run into FILE")
    args = p.parse_args()
    for b in ("sluice", "sluice-sink", "sluice-loadgen"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            sys.exit(f"{args.bin}/{b} is missing: cargo build --release first")
    work = tempfile.mkdtemp(prefix="sluice-wakeups-")
    sink_port, mta_port, metrics_port = free_port(), free_port(), free_port()
    procs = []
    try:
        sink = subprocess.Popen(
            [f"{args.bin}/sluice-sink", "--listen", f"127.0.0.1:{sink_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        config = [
            'hostname = "sluice.bench.test"',
            f'spool_dir = "{work}/spool"',
            "",
            "[[listen]]",
            f'addr = "127.0.0.1:{mta_port}"',
            "",
            "[delivery]",
            f'smarthost = "127.0.0.1:{sink_port}"',
            "",
            "[metrics]",
            f'listen = "127.0.0.1:{metrics_port}"',
        ]
        for plugin in SHIPPED:
            config += ["", "[[plugin]]", f'name = "{plugin}"',
                       f'path = "{args.plugins}/{plugin}.wasm"']
        if args.dkim:
            key = f"{work}/dkim.key"
            subprocess.run([f"{args.bin}/sluice", "dkim", "keygen", "--domain", "bench.test",
                            "--selector", "bench", "--algorithm", args.dkim, "--out", key],
                           check=True, stdout=subprocess.DEVNULL)
            algorithm = "ed25519-sha256" if args.dkim == "ed25519" else "rsa-sha256"
            config += ["", "[[dkim]]", 'domain = "bench.test"', 'selector = "bench"',
                       f'key = "{key}"', f'algorithm = "{algorithm}"']
        config += ["", args.extra]
        with open(f"{work}/sluice.toml", "w") as f:
            f.write("\n".join(config) + "\n")
        server = subprocess.Popen(
            [f"{args.bin}/sluice", "serve", "--config", f"{work}/sluice.toml"],
            stdout=open(f"{work}/sluice.log", "w"), stderr=subprocess.STDOUT)
        procs.append(server)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", mta_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit(f"the server did not start; see {work}/sluice.log")

        def load(n):
            """Runs the generator; its own count of messages accepted per second."""
            report = f"{work}/loadgen-{n}.json"
            subprocess.run([f"{args.bin}/sluice-loadgen", f"127.0.0.1:{mta_port}", "-n", str(n),
                            "-c", "20", "-s", "4096", "--json", report],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=300, check=True)
            time.sleep(1.5)  # the last deliveries and their journal
            with open(report) as f:
                return json.load(f)["messages_per_s"]

        load(3000)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-o", args.perf,
                                     "-p", str(server.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(perf)
            time.sleep(0.5)
        before = threads(server.pid)
        spool_before = spool_counters(metrics_port)
        rate = load(args.messages)
        after = threads(server.pid)
        spool_after = spool_counters(metrics_port)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        n = args.messages
        groups = collections.defaultdict(lambda: [0, 0, 0])
        for tid, (group, vol, invol, cpu) in after.items():
            _, vol0, invol0, cpu0 = before.get(tid, (group, 0, 0, 0))
            g = groups[group]
            g[0] += vol - vol0
            g[1] += invol - invol0
            g[2] += cpu - cpu0
        hz = os.sysconf("SC_CLK_TCK")
        print(f"per message, {n} messages of 4 KiB, 20 connections"
              + (f", DKIM {args.dkim}" if args.dkim else "")
              + f"; accepted at {rate:,.0f} msg/s")
        print(f"| threads | voluntary switches | involuntary switches | CPU µs |")
        print("|---|---:|---:|---:|")
        total = [0, 0, 0]
        for group, (vol, invol, cpu) in sorted(groups.items(), key=lambda g: -g[1][2]):
            if vol + invol + cpu == 0:
                continue
            print(f"| {group} | {vol / n:.2f} | {invol / n:.2f} | {cpu / hz / n * 1e6:.1f} |")
            total = [a + b for a, b in zip(total, (vol, invol, cpu))]
        print(f"| **all** | **{total[0] / n:.2f}** | **{total[1] / n:.2f}** | "
              f"**{total[2] / hz / n * 1e6:.1f}** |")
        d = {k: spool_after.get(k, 0) - spool_before.get(k, 0) for k in spool_after}
        commits = d.get("sluice_spool_commits_total", 0)
        print(f"spool: {commits / n:.2f} group commits per message "
              f"({d.get('sluice_spool_committed_total', 0) / max(commits, 1):.1f} submissions each); "
              f"segments begun: {d.get('prepared', 0):.0f} prepared, {d.get('new', 0):.0f} new; "
              f"{d.get('sluice_spool_segments_prepared_total', 0):.0f} prepared, "
              f"{d.get('sluice_spool_segments_deleted_total', 0):.0f} deleted")

        def mean_ms(family):
            count = d.get(f"{family}_count", 0)
            return d.get(f"{family}_sum", 0) / count * 1e3 if count else float("nan")

        # What bounds a closed-loop run: each connection waits for its 250,
        # which waits for the group commit under way and then its own.
        print(f"mean fdatasync {mean_ms('sluice_spool_fsync_duration_seconds'):.3f} ms, "
              f"mean end of data to 250 {mean_ms('sluice_accept_duration_seconds'):.3f} ms")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
