#!/usr/bin/env python3
"""Sends one message with smtplib.sendmail() and MAIL options, as programs do.

Usage: smtplib_options.py HOST PORT FROM TO OPTION[,OPTION...] < content

smtplib adds SMTPUTF8 itself when an address needs it, so with
mail_options=["SMTPUTF8"] it sends the keyword twice. Prints "ok" and exits
0 when the message was accepted, else prints the refusal and exits 1.
"""

import smtplib
import sys


def main() -> int:
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, sender, rcpt, options = sys.argv[1:]
    content = sys.stdin.buffer.read()
    with smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=10) as smtp:
        try:
            smtp.sendmail(sender, [rcpt], content, mail_options=options.split(","))
        except smtplib.SMTPException as e:
            print(f"refused: {e}")
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
