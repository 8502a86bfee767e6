#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) and run every test and check: tox's
# unit, kernel (under user-mode-linux), lint and chart environments.
#
#   bash scripts/test-all.sh [TOX ARGS...]     e.g. bash scripts/test-all.sh -e unit
#
# Installs the Debian packages the tests need (only those missing), a private
# virtual environment with tox in .venv-tox/, then runs tox. Exits with tox's
# status, after one closing line that counts the tests in the junit reports.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  user-mode-linux gcc libc6-dev kmod mount   # the kernel test runner (tests/vm)
  iproute2 ipvsadm ipset iptables conntrack  # what the dataplane drives, and tests read back
  python3 python3-venv                       # tox and its environments
  systemd                                    # systemd-analyze verify of packaging/systemd
)
command -v kubectl >/dev/null || packages+=(kubernetes-client)  # a real client for tests/apiserver
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "test-all: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv-tox/bin/tox ]]; then
  python3 -m venv .venv-tox
  .venv-tox/bin/pip install -q --disable-pip-version-check 'tox>=4.20'
fi

rm -rf reports
status=0
.venv-tox/bin/tox "$@" || status=$?

# One closing line over every junit report the environments wrote.
python3 - <<'PY'
import glob
import xml.etree.ElementTree as ET

total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sorted(glob.glob("reports/*-junit.xml")):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in total:
            total[key] += int(suite.get(key, 0))
failed = total["failures"] + total["errors"]
passed = total["tests"] - failed - total["skipped"]
print(f"junit: {passed} passed, {failed} failed, {total['skipped']} skipped")
PY
exit "$status"
