#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (as root): Debian packages, then a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(python3 python3-venv python3-pip iproute2 nftables busybox-static procps
              util-linux iperf3 tshark dnsmasq-base etcd-server graphviz)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # compat mode: a .pth path entry instead of an import hook (15 ms off every CLI start)
  .venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
  touch "$stamp"
fi
