#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (as root): Debian packages, then a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(python3 python3-venv python3-pip iproute2 nftables busybox-static procps docker-compose
              util-linux iperf3 tshark dnsmasq-base dnsperf etcd-server etcd-client graphviz)
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

# Docker's engine (tests/integration/test_docker_engine.py runs a private dockerd inside a
# throwaway network namespace). Its postinst (and containerd's) would start the services in
# the root network namespace: a policy-rc.d forbids that for the install (one already there
# is left as it is), and the units the install enabled are disabled again (never started).
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if ! installed docker.io; then
  echo "setup: installing Debian package docker.io (its services are neither started nor enabled)"
  export DEBIAN_FRONTEND=noninteractive
  units=(docker.service docker.socket)
  installed containerd || units+=(containerd.service)
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    trap 'exit 1' HUP INT TERM
    printf '#!/bin/sh\n# scripts/setup.sh: no service starts while docker.io installs\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  [ ${#missing[@]} -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  if [ -n "${made_policy:-}" ]; then
    rm -f "$policy"
    trap - EXIT HUP INT TERM
  fi
  if command -v systemctl >/dev/null; then
    systemctl disable --quiet "${units[@]}" >/dev/null 2>&1 || true
  fi
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

# A small image for the demo and the tests: busybox:latest from busybox-static, as a
# docker-save tarball (reproducible; rebuilt only when busybox or the builder changes).
image=build/images/busybox.tar
if [ ! "$image" -nt /bin/busybox ] || [ ! "$image" -nt cnm/images/busybox.py ]; then
  .venv/bin/python -m cnm.images.busybox --force "$image"
fi

# `net` as `python -IS` with site-packages added on demand (cnm/cli/launcher.py): ~3 ms off
# every call, and bytecode cached whatever PYTHON* variables say. Written at every run (pip
# rewrites the console script on each install).
.venv/bin/python -m cnm.cli.launcher .venv/bin/net
