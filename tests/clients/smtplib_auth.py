#!/usr/bin/env python3
"""Logs in with smtplib and sends one message: STARTTLS then login() on a
submission port, or SMTP_SSL then login() on an smtps port, the server's
certificate verified against a CA file.

Usage: smtplib_auth.py starttls|ssl HOST PORT CAFILE USER PASSWORD FROM TO < content

Prints "ok" and exits 0 when the message was accepted; prints the SMTP
error code and exits 1 when login or sending was refused.
"""

import smtplib
import ssl
import sys


def main() -> int:
    if len(sys.argv) != 9:
        print(__doc__, file=sys.stderr)
        return 2
    how, host, port, cafile, user, password, sender, rcpt = sys.argv[1:]
    content = sys.stdin.buffer.read()
    context = ssl.create_default_context(cafile=cafile)
    try:
        if how == "ssl":
            smtp = smtplib.SMTP_SSL(host, int(port), local_hostname="python.example",
                                    timeout=10, context=context)
        else:
            smtp = smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=10)
            smtp.starttls(context=context)
        with smtp:
            smtp.login(user, password)
            smtp.sendmail(sender, [rcpt], content)
    except smtplib.SMTPResponseException as e:
        print(f"refused: {e.smtp_code} {e.smtp_error.decode(errors='replace')}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
