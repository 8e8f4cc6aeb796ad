#!/usr/bin/env python3
"""Memory per idle connection, plain and inside TLS, as the server sees it.

Usage: idle_memory.py HOST PORT PID COUNT [plain|tls]

Opens COUNT connections that say EHLO and then sit idle, reads the
server's resident memory (VmRSS of PID) before and after, closes them;
then the same with STARTTLS (the certificate is not verified). Prints the
growth per connection for each (or only the one named: a fresh server
for each is more exact, as memory freed by the first run is reused by the
second). The server must allow COUNT connections from one address
([limits] max_connections_per_ip).
"""

import socket
import ssl
import sys
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def reply(f) -> str:
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines).decode()


def open_idle(host: str, port: int, tls: bool):
    s = socket.create_connection((host, port), timeout=10)
    f = s.makefile("rb")
    reply(f)
    s.sendall(b"EHLO idle.example\r\n")
    reply(f)
    if not tls:
        return s, f
    s.sendall(b"STARTTLS\r\n")
    assert reply(f).startswith("220")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname="bench.test")
    g = t.makefile("rb")
    t.sendall(b"EHLO idle.example\r\n")
    reply(g)
    return t, g


def measure(host: str, port: int, pid: int, count: int, tls: bool) -> float:
    time.sleep(0.5)
    before = rss_kib(pid)
    conns = [open_idle(host, port, tls) for _ in range(count)]
    time.sleep(1.0)
    after = rss_kib(pid)
    for s, f in conns:
        f.close()
        s.close()
    return (after - before) / count


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, pid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    modes = sys.argv[5:] or ["plain", "tls"]
    print(f"idle connections: {count}")
    if "plain" in modes:
        print(f"plain: {measure(host, port, pid, count, False):.1f} KiB per connection")
    if "tls" in modes:
        print(f"TLS:   {measure(host, port, pid, count, True):.1f} KiB per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
