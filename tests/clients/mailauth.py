#!/usr/bin/env python3
"""Independent judges for Sluice's email authentication: dkimpy, pyspf and
authres, asking the test's dnsmasq for every record.

Usage:
  mailauth.py sign KEYFILE DOMAIN SELECTOR [simple|relaxed] < message > signed
      dkimpy signs (rsa-sha256; ed25519-sha256 when the key is Ed25519).
  mailauth.py verify DNS_PORT < message
      dkimpy verifies every DKIM-Signature; prints "pass" or "fail" per
      signature, one per line, with its a= and d=.
  mailauth.py spf DNS_PORT IP SENDER HELO
      pyspf's check_host result for the MAIL FROM identity.
  mailauth.py authres < message
      authres parses every Authentication-Results field; prints JSON: a
      list of {"authserv_id", "results": [{"method", "result", "props"}]}.
"""

import json
import sys


def resolver(port):
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = int(port)
    r.timeout = 3
    r.lifetime = 3
    return r


def dnsfunc_for(port):
    r = resolver(port)

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = r.resolve(name, "TXT")
        except Exception:
            return b""
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return dnsfunc


def sign(keyfile, domain, selector, canon="relaxed"):
    import base64

    import dkim

    key = open(keyfile, "rb").read()
    algorithm = b"rsa-sha256"
    seed = ed25519_seed(key)
    if seed is not None:
        # dkimpy takes an Ed25519 key as the base64 of its 32-octet seed.
        key = base64.b64encode(seed)
        algorithm = b"ed25519-sha256"
    message = sys.stdin.buffer.read()
    c = canon.encode()
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        canonicalize=(c, c),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        signature_algorithm=algorithm,
    )
    sys.stdout.buffer.write(signature + message)
    return 0


def ed25519_seed(pem):
    """The seed of a PKCS#8 Ed25519 key (OID 1.3.101.112), else None."""
    import base64

    if b"BEGIN PRIVATE KEY" not in pem:
        return None
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    der = base64.b64decode(body)
    if b"\x06\x03\x2b\x65\x70" not in der:
        return None
    return der[-32:] if len(der) == 48 else der[16:48]


def verify(port):
    import dkim

    message = sys.stdin.buffer.read()
    d = dkim.DKIM(message)
    count = sum(1 for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    if count == 0:
        print("none")
        return 1
    ok = True
    for i in range(count):
        passed = d.verify(idx=i, dnsfunc=dnsfunc_for(port))
        ok = ok and passed
        print(f"{'pass' if passed else 'fail'} a={d.signature_fields.get(b'a', b'').decode()} d={d.domain.decode() if d.domain else ''}")
    return 0 if ok else 1


def spf_check(port, ip, sender, helo):
    import dns.resolver
    import spf

    dns.resolver.default_resolver = resolver(port)
    result, _explanation = spf.check2(i=ip, s=sender, h=helo, timeout=5)
    print(result)
    return 0


def parse_authres():
    import email
    import email.policy

    import authres

    message = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
    out = []
    for value in message.get_all("Authentication-Results") or []:
        unfolded = " ".join(value.split())
        parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + unfolded)
        results = []
        for r in parsed.results:
            props = {f"{p.type}.{p.name}": p.value for p in r.properties}
            results.append({"method": r.method, "result": r.result, "props": props})
        out.append({"authserv_id": parsed.authserv_id, "results": results})
    print(json.dumps(out))
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, *args = sys.argv[1:]
    if command == "sign":
        return sign(*args)
    if command == "verify":
        return verify(*args)
    if command == "spf":
        return spf_check(*args)
    if command == "authres":
        return parse_authres()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
