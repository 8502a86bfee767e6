"""``--oom-score-adj``: how readily the kernel's OOM killer picks this process.

kube-proxy writes its value (default -999, nearly never) to /proc/self/oom_score_adj when
it starts running, and only logs a failure: a container without CAP_SYS_RESOURCE may not
lower its score, and the proxy must run anyway.
"""

from __future__ import annotations

from pathlib import Path

OOM_SCORE_ADJ = Path("/proc/self/oom_score_adj")


def apply_oom_score_adj(value: int, path: Path = OOM_SCORE_ADJ) -> str | None:
    """Write ``value``; return None, or why it could not be written."""
    try:
        path.write_text(f"{value}\n", encoding="ascii")
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None
