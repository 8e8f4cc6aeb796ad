#!/usr/bin/env bash
# Installs (or names) what the test suite needs besides Rust: the real SMTP
# clients and peers the end-to-end tests drive. Idempotent and quick when
# everything is there already.
set -euo pipefail

missing_pkgs=()
command -v swaks >/dev/null 2>&1 || missing_pkgs+=(swaks)
command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
# A real DNS server on a loopback port, for the MX routing tests.
{ [ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1; } || missing_pkgs+=(dnsmasq-base)

if ((${#missing_pkgs[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  apt_get=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt_get=(sudo apt-get)
else
  echo "tests need these Debian packages: ${missing_pkgs[*]}" >&2
  echo "install them with: sudo apt-get install ${missing_pkgs[*]}" >&2
  exit 1
fi
echo "installing ${missing_pkgs[*]}" >&2
DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
