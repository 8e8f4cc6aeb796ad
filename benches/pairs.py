#!/usr/bin/env python3
"""Two variants of Sluice side by side, in alternating runs.

The project's machines have spells in which the same build needs twice the
CPU for a while; two figures compare only if they were taken close together.
This runs the two variants in pairs, one right after the other, swaps which
goes first from pair to pair (so neither always meets a machine warmed or
loaded by the other), and prints every pair, each side's mean and median,
and how far apart the means are.

    benches/pairs.py dkim [-p 5] [-n 20000]
        compare.sh (Sluice only) without and with Ed25519 signing: what
        signing costs of the end-to-end rate (issue 13, item 6: <= 15 %).
    benches/pairs.py builds OLD NEW [-p 5] [-n 40000]
        wakeups.py --bin OLD and --bin NEW (directories holding sluice,
        sluice-sink and sluice-loadgen, and the plugins' .wasm files in
        plugins/ if that build should load its own rather than this tree's
        plugins/dist): CPU per relayed message, the event loops' share of
        it, and the accepted rate.

Both tools bind loopback only and stop every process they start by its PID;
this waits for each (bounded in time) and removes what it wrote.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run is seconds; a stuck one is stopped well before CI or a person waits.
RUN_TIMEOUT_S = 600


def run_compare(messages, dkim):
    """One compare.sh run of Sluice alone: (end-to-end msg/s, CPU-s per 1,000)."""
    out = tempfile.mkdtemp(prefix="sluice-pairs-")
    try:
        cmd = [f"{ROOT}/benches/compare.sh", "--no-build", "--no-postfix", "--no-smtp-source",
               "-n", str(messages), "-o", out]
        if dkim:
            cmd += ["--dkim", "ed25519"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=RUN_TIMEOUT_S)
        with open(f"{out}/table.md") as f:
            table = f.read()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rate = re.search(r"^\| end-to-end msg/s \(sluice-loadgen\) \| ([0-9.]+) ", table, re.M)
    cpu = re.search(r"^\| MTA CPU-s per 1,000 msgs \| ([0-9.]+) ", table, re.M)
    if not rate or not cpu:
        sys.exit(f"compare.sh wrote no Sluice figures:\n{table}")
    return {"msg/s": float(rate.group(1)), "CPU-s per 1,000": float(cpu.group(1))}


def run_wakeups(messages, bin_dir):
    """One wakeups.py run: CPU µs per message (all threads, event loops), msg/s."""
    own_plugins = os.path.join(bin_dir, "plugins")
    plugins = ["--plugins", own_plugins] if os.path.isdir(own_plugins) else []
    out = subprocess.run([sys.executable, f"{ROOT}/benches/wakeups.py", "-n", str(messages),
                          "--bin", bin_dir, *plugins],
                         check=True, capture_output=True, text=True, timeout=RUN_TIMEOUT_S).stdout
    rate = re.search(r"accepted at ([0-9,]+) msg/s", out)
    total = re.search(r"^\| \*\*all\*\* \|.*\| \*\*([0-9.]+)\*\* \|$", out, re.M)
    loops = re.search(r"^\| smtpd \|.*\| ([0-9.]+) \|$", out, re.M)
    if not rate or not total or not loops:
        sys.exit(f"wakeups.py printed no figures:\n{out}")
    return {"CPU µs/msg": float(total.group(1)), "event loops µs/msg": float(loops.group(1)),
            "msg/s": float(rate.group(1).replace(",", ""))}


def figure(v):
    """Three decimals for the small figures (CPU-s per 1,000), one for the rest."""
    return f"{v:,.3f}" if v < 1 else f"{v:,.1f}"


def report(names, runs):
    """Every pair, then each side's mean and median and the change of the mean."""
    keys = list(runs[0][0])
    print(f"| pair | {' | '.join(f'{n}: {k}' for n in names for k in keys)} |")
    print("|---|" + "---:|" * (2 * len(keys)))
    for i, (a, b) in enumerate(runs, 1):
        cells = [figure(side[k]) for side in (a, b) for k in keys]
        print(f"| {i} | {' | '.join(cells)} |")
    print()
    for k in keys:
        a = [r[0][k] for r in runs]
        b = [r[1][k] for r in runs]
        change = (statistics.mean(b) / statistics.mean(a) - 1) * 100
        lower = sum(1 for x, y in zip(a, b) if y < x)
        print(f"{k}: {names[0]} mean {figure(statistics.mean(a))} "
              f"median {figure(statistics.median(a))}; "
              f"{names[1]} mean {figure(statistics.mean(b))} median {figure(statistics.median(b))}; "
              f"{names[1]} {change:+.1f} % on the means, lower in {lower} of {len(runs)} pairs")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("dkim", help="compare.sh without and with Ed25519 signing")
    d.add_argument("-p", "--pairs", type=int, default=5)
    d.add_argument("-n", "--messages", type=int, default=20000)
    b = sub.add_parser("builds", help="wakeups.py with two builds")
    b.add_argument("old")
    b.add_argument("new")
    b.add_argument("-p", "--pairs", type=int, default=5)
    b.add_argument("-n", "--messages", type=int, default=40000)
    args = p.parse_args()
    if args.pairs < 1:
        sys.exit("--pairs must be at least 1")

    if args.mode == "dkim":
        names = ("unsigned", "Ed25519")
        variants = (lambda: run_compare(args.messages, False),
                    lambda: run_compare(args.messages, True))
    else:
        for d in (args.old, args.new):
            missing = [x for x in ("sluice", "sluice-sink", "sluice-loadgen")
                       if not os.access(os.path.join(d, x), os.X_OK)]
            if missing:
                sys.exit(f"{d}: no {', '.join(missing)} (see benches/wakeups.py --bin)")
        names = (os.path.basename(os.path.normpath(args.old)) or "old",
                 os.path.basename(os.path.normpath(args.new)) or "new")
        if names[0] == names[1]:
            names = ("old", "new")
        variants = (lambda: run_wakeups(args.messages, args.old),
                    lambda: run_wakeups(args.messages, args.new))

    runs = []
    for i in range(args.pairs):
        # Even pairs run the first variant first, odd pairs the second.
        order = (0, 1) if i % 2 == 0 else (1, 0)
        got = {}
        for side in order:
            got[side] = variants[side]()
            print(f"pair {i + 1}, {names[side]}: {got[side]}", file=sys.stderr, flush=True)
        runs.append((got[0], got[1]))
    report(names, runs)


if __name__ == "__main__":
    main()
