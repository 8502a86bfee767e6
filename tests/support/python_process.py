"""Running a snippet of Python in an interpreter of its own, for what a test must not do
to its own process (install import stand-ins, freeze objects, change the hash seed)."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c code`` with this interpreter; its output as text. Raises if it fails or
    takes over a minute. ``env`` replaces the environment when given."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
