"""Health-check node ports for ``externalTrafficPolicy: Local`` LoadBalancer Services.

A cloud load balancer probes ``healthCheckNodePort`` on every node to learn
which nodes have endpoints of the Service. As kube-proxy: 200 when this node
has local endpoints and the proxy itself is healthy, 503 otherwise, with a
JSON body and the local endpoint count as ``X-Load-Balancing-Endpoint-Weight``.

``ServiceHealthServers.sync`` takes the whole desired set each time and opens
or closes listeners to match; an endpoint count change touches no socket.
A port that cannot be bound is logged and retried on the next sync.

As kube-proxy's, they listen where NodePorts answer: on every address of both families
when ``--nodeport-addresses`` takes every address, else on each node address it selects
(``set_hosts``; kube-proxy picks them once at start, here they follow the node).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response

from ipvsproxy.core.model import ServiceKey
from ipvsproxy.http.health import ProxyHealth
from ipvsproxy.http.routes import Handler
from ipvsproxy.http.serve import Server, start_app
from ipvsproxy.logging import get_logger

log = get_logger(__name__)


def health_response(key: ServiceKey, local_endpoints: int, proxy_healthy: bool) -> Response:
    body = {
        "service": {"namespace": key.namespace, "name": key.name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    }
    return Response(
        status=200 if local_endpoints > 0 and proxy_healthy else 503,
        text=json.dumps(body),
        content_type="application/json",
        headers={
            "X-Content-Type-Options": "nosniff",
            "X-Load-Balancing-Endpoint-Weight": str(local_endpoints),
        },
    )


class ServiceHealthServers:
    """One listener per healthCheckNodePort, kept in step with the desired set.

    ``hosts``: the node addresses to listen on (those matching
    nodePortAddresses); empty means every address, IPv4 and IPv6.
    """

    def __init__(self, health: ProxyHealth, hosts: Sequence[str] = ()) -> None:
        self._health = health
        self._hosts = list(hosts)
        self._servers: dict[ServiceKey, tuple[int, Server]] = {}
        self._endpoints: dict[ServiceKey, int] = {}

    async def set_hosts(self, hosts: Sequence[str]) -> None:
        """Listen on ``hosts`` from now on: the open listeners close, and the next
        ``sync`` opens them again there."""
        if list(hosts) == self._hosts:
            return
        log.info("health check ports move", hosts=list(hosts) or "every address")
        self._hosts = list(hosts)
        servers = list(self._servers.items())
        self._servers.clear()
        for key, (port, server) in servers:
            await server.close()
            log.info("health check port closed", service=str(key), port=port)

    @property
    def listening(self) -> dict[ServiceKey, int]:
        """Service -> the port it is being served on right now."""
        return {key: port for key, (port, _) in self._servers.items()}

    def _handler(self, key: ServiceKey) -> Handler:
        """Every path, every method: kube-proxy's service health server answers them all."""

        async def handle(_request: BaseRequest) -> Response:
            return health_response(key, self._endpoints.get(key, 0), self._health.is_healthy())

        return handle

    async def sync(self, services: Mapping[ServiceKey, tuple[int, int]]) -> None:
        """Make the listeners match ``{service: (healthCheckNodePort, local endpoints)}``."""
        self._endpoints = {key: count for key, (_, count) in services.items()}
        for key, (port, server) in list(self._servers.items()):
            want = services.get(key)
            if want is None or want[0] != port:
                del self._servers[key]
                await server.close()
                log.info("health check port closed", service=str(key), port=port)
        taken = {port: key for key, (port, _) in self._servers.items()}
        for key in sorted(services):
            port = services[key][0]
            if key in self._servers or port <= 0:
                continue
            if port in taken:
                log.error(
                    "health check port already used",
                    service=str(key),
                    port=port,
                    used_by=str(taken[port]),
                )
                continue
            try:
                server = await start_app(self._handler(key), self._hosts, port)
            except OSError as exc:
                log.warning(
                    "health check port not opened; retrying on next sync",
                    service=str(key),
                    port=port,
                    error=str(exc),
                )
                continue
            self._servers[key] = (port, server)
            taken[port] = key
            log.info("health check port opened", service=str(key), port=port)

    async def close(self) -> None:
        servers = list(self._servers.values())
        self._servers.clear()
        for _, server in servers:
            await server.close()
