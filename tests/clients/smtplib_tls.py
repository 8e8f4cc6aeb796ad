#!/usr/bin/env python3
"""Sends one message over TLS with smtplib: STARTTLS on a plain port, or
SMTP_SSL (implicit TLS) on an smtps port, verifying the server's certificate
against a CA file.

Usage: smtplib_tls.py starttls|ssl HOST PORT CAFILE FROM TO < content

Prints the TLS version and "ok" and exits 0 when the message was accepted;
prints the error and exits 1 otherwise.
"""

import smtplib
import ssl
import sys


def main() -> int:
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    how, host, port, cafile, sender, rcpt = sys.argv[1:]
    content = sys.stdin.buffer.read()
    # The test certificate names the loopback address too, so the host
    # name check passes for HOST as given.
    context = ssl.create_default_context(cafile=cafile)
    try:
        if how == "ssl":
            smtp = smtplib.SMTP_SSL(host, int(port), local_hostname="python.example",
                                    timeout=10, context=context)
        else:
            smtp = smtplib.SMTP(host, int(port), local_hostname="python.example", timeout=10)
            smtp.ehlo()
            smtp.starttls(context=context)
            smtp.ehlo()
        with smtp:
            print(smtp.sock.version())
            smtp.sendmail(sender, [rcpt], content)
    except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
        print(f"failed: {e!r}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
