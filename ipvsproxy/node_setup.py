"""What the proxy does to a node before it proxies, and all that --init-only does.

kube-proxy's order: the kernel modules, its conntrack settings (``platformSetup``), then
what its IPVS proxier sets (``NewProxier``): the scheduler probe, the IPVS sysctls and
timeouts. Each step raises DataplaneError naming the module or setting that is missing or
cannot be written; values already right are not written, so a container that may not write
them (read-only /proc/sys, after a privileged ``--init-only`` init container) starts fine.
"""

from __future__ import annotations

import structlog

from ipvsproxy.config import Config
from ipvsproxy.core.model import IpProtocol, VirtualServer, VirtualServerKey
from ipvsproxy.core.ops import AddVirtualServer, DeleteVirtualServer
from ipvsproxy.dataplane.conntrack_sysctls import ConntrackSettings, apply_conntrack, online_cpus
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.dataplane.sysctl import IPVS_MODULES, apply_ipvs_sysctls

log = structlog.get_logger("ipvsproxy")

# kube-proxy validates --ipvs-scheduler by creating a throwaway virtual server in
# TEST-NET-2 (RFC 5737), an address no real service can have.
SCHEDULER_PROBE = VirtualServerKey("198.51.100.0", 20000, IpProtocol.TCP)


def kernel_modules(config: Config) -> list[str]:
    return [*IPVS_MODULES, f"ip_vs_{config.ipvs_scheduler}"]


def conntrack_settings(config: Config) -> ConntrackSettings:
    return ConntrackSettings(
        max_per_core=config.conntrack_max_per_core,
        min=config.conntrack_min,
        tcp_established_timeout=config.conntrack_tcp_established_timeout,
        tcp_close_wait_timeout=config.conntrack_tcp_close_wait_timeout,
        tcp_be_liberal=config.conntrack_tcp_be_liberal,
        udp_timeout=config.conntrack_udp_timeout,
        udp_stream_timeout=config.conntrack_udp_stream_timeout,
    )


async def setup_node(dataplane: Dataplane, config: Config, cpus: int | None = None) -> None:
    """What kube-proxy does to a node before proxying, and all that --init-only does: the
    modules, the conntrack settings (its platformSetup), then the IPVS ones. Raises
    DataplaneError naming the module or setting that is missing or cannot be written."""
    await dataplane.sysctls.ensure_modules(kernel_modules(config))
    settings = conntrack_settings(config)
    written = await apply_conntrack(dataplane.sysctls, settings, cpus or online_cpus())
    if written:
        log.info("conntrack set", **{name.replace("/", "."): v for name, v in written.items()})
    await prepare_kernel(dataplane, config)


async def prepare_kernel(dataplane: Dataplane, config: Config) -> None:
    """Modules, the scheduler, sysctls and timeouts; raise DataplaneError naming what is missing."""
    await dataplane.sysctls.ensure_modules(kernel_modules(config))
    probe = VirtualServer(SCHEDULER_PROBE, config.ipvs_scheduler)
    await dataplane.ipvs.apply([AddVirtualServer(probe)])
    await dataplane.ipvs.apply([DeleteVirtualServer(SCHEDULER_PROBE)])
    release = await dataplane.sysctls.kernel_release()
    changed = await apply_ipvs_sysctls(dataplane.sysctls, release, config.ipvs_strict_arp)
    if changed:
        log.info(
            "sysctls set", **{name.replace("/", "."): value for name, value in changed.items()}
        )
    await dataplane.ipvs.set_timeouts(
        int(config.ipvs_tcp_timeout), int(config.ipvs_tcpfin_timeout), int(config.ipvs_udp_timeout)
    )
