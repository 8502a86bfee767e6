"""The kernel subsystems the proxy programs, one small interface each.

Every interface has a real implementation (netlink or a system tool) and an
in-memory fake; one contract test suite per interface runs against both
(``tests/contract``), which is what lets the reconciler's tests trust the fakes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from ipvsproxy.core.ipset_catalog import IpsetSpec
from ipvsproxy.core.model import (
    Family,
    IpvsTable,
    RealServerKey,
    RealServerStatus,
    Stats,
    VirtualServerKey,
)
from ipvsproxy.core.ops import IpvsOp

# ----------------------------------------------------------------- IPVS


class Ipvs(Protocol):
    async def dump(self) -> IpvsTable:
        """Every virtual server with its real servers, in as few round trips as possible."""
        ...

    async def list_real_servers(self, virtual: VirtualServerKey) -> list[RealServerStatus]: ...

    async def stats(self) -> dict[VirtualServerKey, Stats]: ...

    async def fingerprint(self) -> int:
        """Equal from one call to the next while no virtual or real server is added,
        removed or changed (connection and traffic counters do not count); cheap: what
        the idle resync asks instead of a dump."""
        ...

    async def apply(self, ops: Sequence[IpvsOp]) -> None:
        """Apply ``ops`` in order, batched. Every op is attempted; if any failed,
        raise IpvsBatchError listing each failed op with its error."""
        ...

    async def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        """As ``ipvsadm --set``: a 0 leaves that timeout as it is."""
        ...

    async def close(self) -> None: ...


# ------------------------------------------------------------ addresses

DUMMY_INTERFACE = "kube-ipvs0"


class Addresses(Protocol):
    async def ensure_dummy(self) -> None:
        """Create kube-ipvs0 (a dummy link, left down as kube-proxy does) if missing."""
        ...

    async def delete_dummy(self) -> None: ...

    async def bound(self) -> set[str]:
        """The addresses bound to kube-ipvs0."""
        ...

    async def bind(self, addresses: Sequence[str]) -> None:
        """Bind each as /32 or /128 to kube-ipvs0; already bound is fine."""
        ...

    async def unbind(self, addresses: Sequence[str]) -> None:
        """Remove each from kube-ipvs0; not bound is fine."""
        ...

    async def node_addresses(self) -> set[str]:
        """Every local address that is not on kube-ipvs0 (candidates for NodePort)."""
        ...

    async def fingerprint(self) -> int:
        """Equal from one call to the next while no address of any link (kube-ipvs0's and
        the node's) is added or removed."""
        ...

    async def close(self) -> None: ...


# -------------------------------------------------------------- ipsets


class Ipsets(Protocol):
    async def ensure(self, specs: Sequence[IpsetSpec]) -> Mapping[str, Sequence[str]]:
        """Make each set exist with kube-proxy's create options (plus skbinfo where the
        spec asks): create the missing ones, rebuild (fill and swap, entries kept) those
        with other options. Returns the rebuilt sets, each with what differed. A set of
        another type or family raises InvalidValueError naming it, after the others."""
        ...

    async def list_names(self) -> set[str]: ...

    async def entries(self, name: str) -> set[str]:
        """Entries in ipset's save syntax, e.g. ``10.96.0.10,tcp:53``."""
        ...

    async def save_all(self) -> dict[str, set[str]]:
        """Every set's entries, read in one bulk call (as ``ipset save``)."""
        ...

    async def update(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> None:
        """Per set name: (entries to add, entries to delete), all in one bulk call."""
        ...

    async def replace(self, name: str, entries: set[str]) -> None:
        """Atomically make ``name`` hold exactly ``entries`` (fill a temporary set, swap)."""
        ...

    async def destroy(self, names: Sequence[str]) -> None: ...

    async def fingerprint(self) -> int:
        """Equal from one call to the next while no set, set option or entry changes."""
        ...


# ------------------------------------------------------------ iptables


class Iptables(Protocol):
    async def restore(self, family: Family, rules: str) -> None:
        """One ``iptables-restore --noflush`` of ``rules`` (several tables allowed)."""
        ...

    async def save(self, family: Family, table: str) -> str: ...

    async def save_tables(self, family: Family) -> dict[str, str]:
        """Every table's ``iptables-save`` text, by table name, in one call; a table the
        kernel has not made yet is missing."""
        ...

    async def user_chains(self, family: Family) -> dict[str, frozenset[str]]:
        """The user chains of each table ``save_tables`` would print, by table name (a table
        with none may be missing), read without a save: no process for the real one."""
        ...

    async def cleanup(self, family: Family, tables: Sequence[str] | None = None) -> None:
        """In ``tables`` (default: all the proxy writes), remove the proxy's chains and the
        leftovers of kube-proxy's other modes, with every jump to them; nothing else."""
        ...

    async def fingerprint(self, family: Family) -> int:
        """Equal from one call to the next while no rule of ``family`` in a table the proxy
        writes changes (packet and byte counters do not count). May also change when
        nothing of those did (the nft backend counts every ruleset commit)."""
        ...


# ------------------------------------------------------------ nftables


class Nftables(Protocol):
    """nf_tables tables, by (family, name): the proxy only removes kube-proxy's."""

    async def tables(self) -> set[tuple[str, str]]:
        """Every table, e.g. ("ip6", "kube-proxy"); none on a kernel without nf_tables."""
        ...

    async def delete_tables(self, tables: Sequence[tuple[str, str]]) -> None:
        """Delete these tables (with everything in them) at once; missing ones are fine."""
        ...


# ----------------------------------------------------------- conntrack


class Conntrack(Protocol):
    async def delete_udp_to_service(
        self, address: str, port: int, keep: Collection[RealServerKey] = ()
    ) -> int:
        """Delete UDP entries whose original destination is address:port, except those
        answered by a real server in ``keep`` (live flows). Returns the count."""
        ...

    async def delete_udp_to_real_server(self, virtual: str, port: int, real: RealServerKey) -> int:
        """Delete UDP entries to virtual:port that IPVS sent to ``real`` (answered from its
        address and port). Returns the count."""
        ...

    async def close(self) -> None: ...


# -------------------------------------------------------------- sysctls


class Sysctls(Protocol):
    async def get(self, name: str) -> str:
        """``name`` as under /proc/sys, e.g. ``net/ipv4/vs/conntrack``."""
        ...

    async def set(self, name: str, value: str) -> None:
        """Raise InvalidValueError for an unknown name or a value the kernel refuses,
        SysctlWriteError for one that may not be written here (read-only, another netns)."""
        ...

    async def get_parameter(self, module: str, name: str) -> str:
        """A module's parameter, as under /sys/module/MODULE/parameters/NAME."""
        ...

    async def set_parameter(self, module: str, name: str, value: str) -> None:
        """Errors as ``set``'s."""
        ...

    async def kernel_release(self) -> str: ...

    async def ensure_modules(self, names: Sequence[str]) -> None:
        """Load each module that is not yet loaded; raise KernelModuleError naming a missing one."""
        ...
