"""A Kubernetes-API-compatible server for tests: `ApiServer` (in-process) or
`python -m tests.apiserver --port N --state FILE.yaml` (separate process)."""

from tests.apiserver.server import ApiServer
from tests.apiserver.store import ApiError, Store

__all__ = ["ApiError", "ApiServer", "Store"]
