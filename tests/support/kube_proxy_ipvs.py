"""kube-proxy's IPVS-mode sync, for a node handed back to it: the contract ipvsproxy keeps.

A node running ipvsproxy must be able to go back to kube-proxy. No kube-proxy binary can
be had here, so this replays what its IPVS mode does on every sync
(pkg/proxy/ipvs/proxier.go ``syncProxyRules``), with its own commands where the contract
lies in them, for IPv4 ClusterIP, NodePort and LoadBalancer Services:

1. ``ipset create NAME TYPE family inet hashsize 1024 maxelem 65536 -exist`` (bitmap:port:
   ``range 0-65535``) for every set it knows (pkg/proxy/ipvs/ipset.go, ipset/ipset.go);
   if one fails, kube-proxy gives up the whole sync: ``SyncAbandoned`` here;
2. kube-ipvs0, virtual servers and real servers (over netlink, as kube-proxy), the VIPs
   bound to kube-ipvs0;
3. set entries: each set made to hold exactly what it wants (``ipset restore -exist``
   here, one ``ipset add``/``del`` per entry there: the same result);
4. its chains with one ``iptables-restore --noflush`` (tests/fixtures/kube_proxy/ipvs-mode-
   1.30.save, plus the load-balancer rules it writes when it has load balancers) and each
   jump from a built-in chain with ``iptables -C``, else ``-I ... 1``;
5. ``cleanLegacyService``: every virtual server of the family it did not program is
   deleted. A firewall-mark one it lists as 0.0.0.0:0 with no protocol and asks the
   kernel to delete by that address, which finds nothing: it stays, and kube-proxy logs
   "Failed to delete service" at every sync (``errors`` here);
6. addresses on kube-ipvs0 it did not bind are unbound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ipvsproxy.core.model import IpProtocol, RealServer, RealServerKey, VirtualServer
from ipvsproxy.core.model import VirtualServerKey as Key
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    IpvsOp,
)
from ipvsproxy.dataplane.errors import CommandError
from ipvsproxy.dataplane.ipsets import run_command
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from tests.support.kube_proxy_state import fixture

# kube-proxy's sets (ipsetInfo, ~1.30): name, type.
SETS = (
    ("KUBE-LOOP-BACK", "hash:ip,port,ip"),
    ("KUBE-CLUSTER-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
    ("KUBE-NODE-PORT-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port"),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port"),
    ("KUBE-IPVS-IPS", "hash:ip"),
)
_OWN_CHAINS = {
    "nat": ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER",
            "KUBE-MARK-MASQ"),
    "filter": ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL",
               "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER"),
}  # fmt: skip
_BUILTIN = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")
# What writeIptablesRules adds when KUBE-LOAD-BALANCER (and -LOCAL) have entries.
_LB_RULES = (
    '-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set'
    " KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
    '-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port'
    ' with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst'
    " -j RETURN",
    "-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT",
)


class SyncAbandoned(Exception):
    """kube-proxy could not create a set: it abandons the sync (and retries, in vain)."""


@dataclass(frozen=True)
class Service:
    """One TCP Service port as kube-proxy programs it."""

    cluster_ip: str
    port: int
    endpoints: tuple[str, ...]  # "ip:port"
    node_port: int | None = None
    lb_ip: str | None = None
    # externalTrafficPolicy Local: the endpoints on this node (the LB's virtual server
    # gets only these, or every endpoint if there is none here: #97081).
    local_endpoints: tuple[str, ...] | None = None


@dataclass
class KubeProxyIpvsMode:
    node_ips: Sequence[str]
    cluster_cidr: str
    backend: str = "legacy"  # the node's iptables backend
    errors: list[str] = field(default_factory=list)

    async def sync(self, services: Sequence[Service]) -> None:
        await self._create_sets()
        await run_command(["sh", "-c", "ip link add kube-ipvs0 type dummy 2>/dev/null; true"])
        bound = await self._program_ipvs(services)
        await self._sync_entries(services, bound)
        await self._write_rules(any(s.lb_ip for s in services))
        await self._unbind_others(bound)

    async def _create_sets(self) -> None:
        for name, kind in SETS:
            options = (
                ["range", "0-65535"]
                if kind == "bitmap:port"
                else ["family", "inet", "hashsize", "1024", "maxelem", "65536"]
            )
            try:
                await run_command(["ipset", "create", name, kind, *options, "-exist"])
            except CommandError as err:
                raise SyncAbandoned(err.stderr.strip()) from None

    async def _program_ipvs(self, services: Sequence[Service]) -> set[str]:
        wanted: dict[Key, tuple[str, ...]] = {}
        bound: set[str] = set()
        for svc in services:
            wanted[Key(svc.cluster_ip, svc.port, IpProtocol.TCP)] = svc.endpoints
            bound.add(svc.cluster_ip)
            if svc.node_port is not None:
                for ip in self.node_ips:
                    wanted[Key(ip, svc.node_port, IpProtocol.TCP)] = svc.endpoints
            if svc.lb_ip is not None:
                local = svc.local_endpoints
                wanted[Key(svc.lb_ip, svc.port, IpProtocol.TCP)] = local if local else svc.endpoints
                bound.add(svc.lb_ip)
        ipvs = await NetlinkIpvs.open()
        try:
            table = await ipvs.dump()
            ops: list[IpvsOp] = []
            for key, endpoints in wanted.items():
                if key not in table.virtual_servers:
                    ops.append(AddVirtualServer(VirtualServer(key, "rr")))
                have = {s.server.key for s in table.real_servers.get(key, ())}
                want = {_real_server(ep) for ep in endpoints}
                ops += [AddRealServer(key, RealServer(k)) for k in sorted(want - have)]
                ops += [DeleteRealServer(key, k) for k in sorted(have - want)]
            for key in table.virtual_servers:
                if key in wanted:
                    continue
                if key.fwmark:
                    self.errors.append(f"Failed to delete service 0.0.0.0:0 (mark {key.fwmark:#x})")
                else:
                    ops.append(DeleteVirtualServer(key))
            await ipvs.apply(ops)
        finally:
            await ipvs.close()
        for address in sorted(bound):
            await run_command(
                ["sh", "-c", f"ip addr add {address}/32 dev kube-ipvs0 2>/dev/null; true"]
            )
        return bound

    async def _sync_entries(self, services: Sequence[Service], bound: set[str]) -> None:
        want: dict[str, set[str]] = {name: set() for name, _ in SETS}
        for svc in services:
            want["KUBE-CLUSTER-IP"].add(f"{svc.cluster_ip},tcp:{svc.port}")
            for ep in svc.endpoints:
                ip, port = ep.rsplit(":", 1)
                want["KUBE-LOOP-BACK"].add(f"{ip},tcp:{port},{ip}")
            if svc.node_port is not None:
                want["KUBE-NODE-PORT-TCP"].add(str(svc.node_port))
            if svc.lb_ip is not None:
                want["KUBE-LOAD-BALANCER"].add(f"{svc.lb_ip},tcp:{svc.port}")
                if svc.local_endpoints is not None:
                    want["KUBE-LOAD-BALANCER-LOCAL"].add(f"{svc.lb_ip},tcp:{svc.port}")
        want["KUBE-IPVS-IPS"] = set(bound)
        lines: list[str] = []
        for name, entries in want.items():
            have = _members(await run_command(["ipset", "list", name]))
            lines += [f"del {name} {e}" for e in sorted(have - entries)]
            lines += [f"add {name} {e}" for e in sorted(entries - have)]
        if lines:
            await run_command(["ipset", "restore", "-exist"], "\n".join(lines) + "\n")

    async def _write_rules(self, load_balancers: bool) -> None:
        values = {
            "CLUSTER_CIDR": self.cluster_cidr,
            **dict.fromkeys(("POD1", "POD2", "POD3", "NODE_PORT", "NODE_IP"), ""),
        }
        saved = fixture("ipvs-mode-1.30.save", **values)
        restore: list[str] = []
        jumps: list[tuple[str, list[str]]] = []
        table = ""
        for line in saved.splitlines():
            if line.startswith("*"):
                table = line[1:]
                if table in _OWN_CHAINS:
                    restore.append(line)
                    restore += [f":{chain} - [0:0]" for chain in _OWN_CHAINS[table]]
            elif table not in _OWN_CHAINS:
                continue
            elif line == "COMMIT":
                if table == "nat" and load_balancers:
                    restore += _LB_RULES
                restore.append(line)
            elif line.startswith("-A "):
                chain, target = line.split()[1], line.split()[-1]
                if chain in _OWN_CHAINS[table]:
                    restore.append(line)
                elif chain in _BUILTIN and target in _OWN_CHAINS[table]:
                    jumps.append((table, line.split()[1:]))
        tool = f"iptables-{self.backend}"
        await run_command([f"{tool}-restore", "-w", "5", "--noflush"], "\n".join(restore) + "\n")
        for table, rule in jumps:
            try:
                await run_command([tool, "-w", "5", "-t", table, "-C", *_unquoted(rule)])
            except CommandError:
                await run_command([tool, "-w", "5", "-t", table, "-I", rule[0], "1",
                                   *_unquoted(rule[1:])])  # fmt: skip

    async def _unbind_others(self, bound: set[str]) -> None:
        listed = await run_command(["ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0"])
        for line in listed.splitlines():
            address = line.split()[3].split("/")[0]
            if address not in bound:
                await run_command(["ip", "addr", "del", f"{address}/32", "dev", "kube-ipvs0"])


def _real_server(endpoint: str) -> RealServerKey:
    ip, port = endpoint.rsplit(":", 1)
    return RealServerKey(ip, int(port))


def _members(listed: str) -> set[str]:
    return set(listed.split("Members:\n", 1)[-1].split()) if "Members:" in listed else set()


def _unquoted(words: list[str]) -> list[str]:
    """Words of a saved rule as argv: the quoted comment is one argument."""
    out: list[str] = []
    quoted: list[str] | None = None
    for word in words:
        if quoted is not None:
            quoted.append(word)
            if word.endswith('"'):
                out.append(" ".join(quoted).strip('"'))
                quoted = None
        elif word.startswith('"') and not (word.endswith('"') and len(word) > 1):
            quoted = [word]
        else:
            out.append(word.strip('"'))
    return out
