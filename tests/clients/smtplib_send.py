#!/usr/bin/env python3
"""Sends one message with Python's smtplib, the way a real program would.

Usage: smtplib_send.py HOST PORT FROM TO [TO...] < content

The content is read from standard input as bytes and handed to
SMTP.data(), which dot-stuffs it and appends the end-of-data line.
Prints the reply to the end of DATA as "<code> <text>" and exits 0 only if
it was 250; any other refusal is printed and exits 1.
"""

import smtplib
import sys


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, sender, *rcpts = sys.argv[1:]
    content = sys.stdin.buffer.read()
    with smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=10) as smtp:
        code, _ = smtp.ehlo()
        if code != 250:
            print(f"EHLO refused: {code}", file=sys.stderr)
            return 1
        code, text = smtp.mail(sender)
        if code != 250:
            print(f"{code} {text.decode()}")
            return 1
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            if code != 250:
                print(f"{code} {text.decode()}")
                return 1
        code, text = smtp.data(content)
        print(f"{code} {text.decode()}")
        return 0 if code == 250 else 1


if __name__ == "__main__":
    sys.exit(main())
