#!/usr/bin/env bash
# Install the Debian packages that the tests and the demo need (only those missing).
set -euo pipefail
packages=(
  user-mode-linux gcc libc6-dev kmod mount   # the kernel test runner (tests/vm)
  iproute2 ipvsadm ipset iptables conntrack  # what the dataplane drives, and tests read back
  python3 python3-venv                       # tox and its environments
  systemd                                    # systemd-analyze verify of packaging/systemd
  podman runc mmdebstrap                     # the image: its base, build and runs (tests/image)
)
command -v kubectl >/dev/null || packages+=(kubernetes-client)  # a real client for tests/apiserver
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
