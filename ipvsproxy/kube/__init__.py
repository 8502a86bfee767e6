"""Watching the cluster: reflectors over kubernetes_asyncio into a ClusterCache."""

from ipvsproxy import lean_import

# Before any module of this package imports kubernetes_asyncio (see lean_import): no
# model and no API class but the two the watcher uses is ever loaded.
lean_import.install(
    "kubernetes_asyncio",
    (
        "kubernetes_asyncio",
        "kubernetes_asyncio.client",
        "kubernetes_asyncio.client.api",
        "kubernetes_asyncio.client.models",
    ),
    needed=("kubernetes_asyncio.client.api_client", "kubernetes_asyncio.config"),
)

from ipvsproxy.kube.cache import ChangeListener, ClusterCache  # noqa: E402
from ipvsproxy.kube.client import EventPoster, make_api_client  # noqa: E402
from ipvsproxy.kube.reflector import Reflector, ReflectorSettings  # noqa: E402
from ipvsproxy.kube.watcher import PROXY_LABEL_SELECTOR, ClusterWatcher  # noqa: E402

__all__ = [
    "PROXY_LABEL_SELECTOR",
    "ChangeListener",
    "ClusterCache",
    "ClusterWatcher",
    "EventPoster",
    "Reflector",
    "ReflectorSettings",
    "make_api_client",
]
