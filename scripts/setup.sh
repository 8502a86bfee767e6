#!/usr/bin/env bash
# Install the Debian packages that the tests and the demo need (only those missing).
set -euo pipefail
packages=(
  user-mode-linux gcc libc6-dev kmod mount   # the kernel test runner (tests/vm/uml_run.py)
  qemu-system-x86 linux-image-6.12-cloud-amd64  # the Linux 6.12 runner (tests/vm/qemu_run.py)
  iproute2 ipvsadm ipset iptables conntrack  # what the dataplane drives, and tests read back
  nftables                                   # tests: kube-proxy's nftables mode to take over from
  python3 python3-venv                       # tox and its environments
  systemd                                    # systemd-analyze verify of packaging/systemd
  podman runc mmdebstrap                     # the image: its base, build and runs (tests/image)
  prometheus                                 # promtool (tox -e chart), a real Prometheus (tests/kernel)
)
command -v kubectl >/dev/null || packages+=(kubernetes-client)  # a real client for tests/apiserver
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Debian 12 publishes its Linux 6.12 kernels in bookworm-security, which a stock install
  # lists; where a machine's sources leave it out, add it from the same mirror.
  if [[ " ${missing[*]} " == *" linux-image-6.12-cloud-amd64 "* ]] &&
    ! apt-cache policy linux-image-6.12-cloud-amd64 | grep -q 'Candidate: [0-9]'; then
    # grep exits 2 when one of the two is missing (deb822-only machines have no
    # sources.list), which pipefail would turn into the script's exit.
    mirror=$({ grep -rhoE '[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
      /etc/apt/sources.list.d 2>/dev/null || true; } | head -n 1 | tr -d ' ')
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "setup: enabling bookworm-security (${mirror%/}-security) for linux-image-6.12-cloud-amd64"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n%s\n' \
      "${mirror%/}-security" 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
      >/etc/apt/sources.list.d/ipvsproxy-bookworm-security.sources
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests run their own Prometheus; a service the package started on this host is not theirs.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
