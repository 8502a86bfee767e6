"""Watching the cluster: reflectors over kubernetes_asyncio into a ClusterCache."""

from ipvsproxy.kube.cache import ChangeListener, ClusterCache
from ipvsproxy.kube.client import EventPoster, make_api_client
from ipvsproxy.kube.reflector import Reflector, ReflectorSettings
from ipvsproxy.kube.watcher import PROXY_LABEL_SELECTOR, ClusterWatcher

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
