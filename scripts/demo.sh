#!/usr/bin/env bash
# Show ipvsproxy doing its job, without a cluster: boots a kernel with IPVS
# (Debian's user-mode-linux), starts a test API server with sample Services and
# pods in network namespaces, runs the real ipvsproxy against them, sends
# requests, and prints the IPVS table and which pod answered each request.
# A fresh Debian 12 machine, as root: installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ ! -x .venv/bin/ipvsproxy ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
fi
exec python3 tests/vm/uml_run.py --timeout 600 -- .venv/bin/python scripts/demo.py
