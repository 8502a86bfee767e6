#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) and run every test and check: tox's
# unit, host (nf_tables), kernel (under user-mode-linux 6.1), kernel612 (under Linux 6.12
# in qemu), lint, chart and image (podman) environments.
#
#   bash scripts/test-all.sh [TOX ARGS...]     e.g. bash scripts/test-all.sh -e unit
#
# Installs the Debian packages the tests need (only those missing), a private
# virtual environment with tox in .venv-tox/, then runs tox. Exits with tox's
# status, after one closing line that counts the tests in the junit reports.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [[ ! -x .venv-tox/bin/tox ]]; then
  python3 -m venv .venv-tox
  .venv-tox/bin/pip install -q --disable-pip-version-check 'tox>=4.20'
fi

rm -rf reports
status=0
if (( $# )); then
  .venv-tox/bin/tox "$@" || status=$?
else
  # The two kernel suites side by side: each spends much of its time waiting (timers in
  # the tests, its VM's slow process starts), and one after the other they took most of
  # CI's 20 minutes. Linux 6.12's output follows the rest, whole.
  mkdir -p reports
  # Its environment first, so that the two tox runs never build the package together.
  .venv-tox/bin/tox -e kernel612 --notest
  .venv-tox/bin/tox -e kernel612 --skip-pkg-install >reports/kernel612.log 2>&1 &
  kernel612=$!
  .venv-tox/bin/tox -e unit,host,kernel,lint,chart,image || status=$?
  wait "$kernel612" || status=$?
  cat reports/kernel612.log
fi

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
