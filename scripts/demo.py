"""Run the demo inside a kernel with IPVS (scripts/demo.sh boots one): see tests/support/demo.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.demo import run_demo  # noqa: E402


def main() -> int:
    print(f"kernel: {subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout}")
    subprocess.run(
        ["modprobe", "-a", "ip_vs", "ipv6", "veth", "dummy", "nf_conntrack"], check=False
    )
    result = asyncio.run(run_demo(print, [str(Path(sys.executable).parent / "ipvsproxy")]))
    print("demo:", "all checks passed" if result.passed else "SOME CHECKS FAILED")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
