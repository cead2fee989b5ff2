#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) for seng-gateway: system packages and ./.venv.
# Sourced by scripts/run-tests and scripts/run-gateway; safe and fast to run again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

APT_PACKAGES=(
    python3 python3-venv python3-dev gcc      # interpreter, venv, builds of native wheels
    iproute2 iputils-ping nftables conntrack  # data plane, namespaces, firewall sets
    iperf3 curl                               # traffic through the tunnel in integration tests
    postgresql                                # the shared-store backend, tested for real
    systemd                                   # systemd-analyze for the unit file checks
    build-essential debhelper python3.11-dev python3.11-venv  # the .deb (packaging/build-deb)
    debootstrap lintian man-db systemd-container  # the .deb's install and boot tests, lint
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "bootstrap: creating $VENV" >&2
    python3 -m venv "$VENV"
fi

# Reinstall only when the dependency declaration changed.
stamp="$VENV/.seng-deps.sha256"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "bootstrap: installing Python packages into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" >&2
    echo "$want" >"$stamp"
fi
export PATH="$VENV/bin:$PATH"
