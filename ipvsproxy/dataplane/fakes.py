"""In-memory fakes of Addresses, Ipsets, Iptables, Conntrack and Sysctls.

Each behaves as its real counterpart observably does (the contract suites in
tests/contract run the same tests against both), including the typed errors; each has a
few test hooks (``add_node_address``, ``add_udp_entry``, ...) to seed what the real kernel
would already hold.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from ipvsproxy.core.ipset_catalog import IpsetSpec, entry_key
from ipvsproxy.core.model import Family, RealServerKey
from ipvsproxy.dataplane.addresses import is_node_address, parse_addresses
from ipvsproxy.dataplane.conntrack import parse_real, parse_target
from ipvsproxy.dataplane.errors import (
    CommandError,
    InvalidValueError,
    KernelModuleError,
    SysctlWriteError,
)
from ipvsproxy.dataplane.ipset_specs import (
    EntryParts,
    SetOptions,
    check_mark,
    create_line,
    option_differences,
    parse_entry,
    wanted_options,
)
from ipvsproxy.dataplane.ipsets import _check_owned
from ipvsproxy.dataplane.iptables import cleanup as iptables_cleanup
from ipvsproxy.dataplane.iptables_rules import BUILTIN_CHAINS
from ipvsproxy.dataplane.nftables import FAMILIES as NFT_FAMILIES

# ------------------------------------------------------------------ addresses


class FakeAddresses:
    def __init__(self, node_addresses: Iterable[str] = ("127.0.0.1", "::1")) -> None:
        self.dummy: set[str] | None = None  # None: kube-ipvs0 does not exist
        self.others = {str(ipaddress.ip_address(a)) for a in node_addresses}

    def add_node_address(self, address: str) -> None:
        """Test hook: an address on some other link of the node."""
        self.others.add(str(ipaddress.ip_address(address)))

    async def ensure_dummy(self) -> None:
        if self.dummy is None:
            self.dummy = set()

    async def delete_dummy(self) -> None:
        self.dummy = None

    async def bound(self) -> set[str]:
        return set(self.dummy or ())

    async def bind(self, addresses: Sequence[str]) -> None:
        ips = parse_addresses(addresses)
        if self.dummy is None:
            raise InvalidValueError("interface", "kube-ipvs0", "does not exist")
        self.dummy.update(str(ip) for ip in ips)

    async def unbind(self, addresses: Sequence[str]) -> None:
        ips = parse_addresses(addresses)
        if self.dummy is not None:
            self.dummy.difference_update(str(ip) for ip in ips)

    async def node_addresses(self) -> set[str]:
        return {a for a in self.others if is_node_address(a)}

    async def fingerprint(self) -> int:
        dummy = None if self.dummy is None else sorted(self.dummy)
        return checksum_of((dummy, sorted(self.others)))

    async def close(self) -> None:
        pass


def checksum_of(value: object) -> int:
    """The fakes' fingerprint: a CRC-32 of a canonical (sorted) rendering of their state."""
    return zlib.crc32(repr(value).encode())


# --------------------------------------------------------------------- ipsets


class FakeIpsets:
    def __init__(self) -> None:
        self.sets: dict[str, tuple[IpsetSpec, set[str]]] = {}
        self.options: dict[str, SetOptions] = {}  # each set's create options
        self.calls = 0  # bulk calls made (one per method call that changes something)

    def _get(self, name: str) -> tuple[IpsetSpec, set[str]]:
        if name not in self.sets:
            raise InvalidValueError("ipset name", name, "no such set")
        return self.sets[name]

    def create_existing(self, spec: IpsetSpec, options: SetOptions) -> None:
        """A set made by someone else (kube-proxy, an older proxy) with ``options``, as
        ``ipset create`` would make it: what tests put in place before the proxy starts."""
        create_line(spec, options)  # validates type and name
        self.sets[spec.name] = (spec._replace(skbinfo=options.skbinfo), set())
        self.options[spec.name] = options

    async def ensure(self, specs: Sequence[IpsetSpec]) -> dict[str, list[str]]:
        _check_owned([s.name for s in specs])
        rebuilt: dict[str, list[str]] = {}
        conflicts = []
        for spec in specs:
            create_line(spec)  # validates type and name
            want = wanted_options(spec)
            old = self.sets.get(spec.name)
            if old is None:
                self.sets[spec.name] = (spec, set())
            elif (old[0].type, old[0].family) != (spec.type, spec.family):
                conflicts.append(f"{spec.name} is {old[0].type} {old[0].family.k8s_name}")
                continue
            elif differences := option_differences(self.options[spec.name], want):
                # Rebuilt with the wanted options, as IpsetCli does (a swap): same entries,
                # without their marks if the set can no longer hold any.
                entries = old[1]
                if not spec.skbinfo:
                    entries = {entry_key(e) for e in entries}
                self.sets[spec.name] = (old[0]._replace(skbinfo=spec.skbinfo), entries)
                rebuilt[spec.name] = differences
            self.options[spec.name] = want
        self.calls += 1
        if conflicts:
            raise InvalidValueError("ipset", "; ".join(conflicts), "another type or family")
        return rebuilt

    async def list_names(self) -> set[str]:
        return set(self.sets)

    async def entries(self, name: str) -> set[str]:
        return set(self._get(name)[1])

    async def save_all(self) -> dict[str, set[str]]:
        return {name: set(entries) for name, (_, entries) in self.sets.items()}

    async def fingerprint(self) -> int:
        return checksum_of(
            sorted(
                (name, spec, self.options.get(name), sorted(entries))
                for name, (spec, entries) in self.sets.items()
            )
        )

    async def update(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> None:
        planned: list[tuple[str, list[str], set[str]]] = []
        for name, (add, delete) in changes.items():
            spec, _ = self._get(name)
            planned.append(
                (
                    name,
                    [_parse(spec, e).text() for e in add],
                    {_parse(spec, e).key_text() for e in delete},
                )
            )
        for name, adds, deletes in planned:
            spec, held = self.sets[name]
            if not spec.skbinfo:  # an entry is its key: O(change), as the benches need
                held.difference_update(deletes)
                held.update(adds)
                continue
            # The kernel keeps one entry per key; the mark is data: deletes go by key, an
            # add of a present key replaces its mark (-exist). Marked sets are small.
            by_key = {entry_key(e): e for e in held}
            for key in deletes:
                by_key.pop(key, None)
            by_key.update((entry_key(e), e) for e in adds)
            self.sets[name] = (spec, set(by_key.values()))
        self.calls += 1

    async def replace(self, name: str, entries: set[str]) -> None:
        _check_owned([name])
        spec, _ = self._get(name)
        by_key = {entry_key(t): t for t in (_parse(spec, e).text() for e in entries)}
        self.sets[name] = (spec, set(by_key.values()))
        self.calls += 1

    async def destroy(self, names: Sequence[str]) -> None:
        _check_owned(names)
        for name in names:
            self.sets.pop(name, None)
            self.options.pop(name, None)
        self.calls += 1


def _parse(spec: IpsetSpec, entry: str) -> EntryParts:
    return check_mark(parse_entry(spec.type, spec.family, entry), spec.name, spec.skbinfo)


# ------------------------------------------------------------------- iptables

_BUILTIN = BUILTIN_CHAINS
_TARGETS = {
    "SET",
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "MASQUERADE",
    "MARK",
    "SNAT",
    "DNAT",
    "LOG",
    "CONNMARK",
    "NOTRACK",
    "CT",
    "REDIRECT",
    "TPROXY",
}
Table = dict[str, list[str]]  # chain -> rules (the text after "-A CHAIN ")


def _jump_target(rule: str) -> str | None:
    m = re.search(r"(?:^|\s)(?:-j|--jump|-g|--goto)\s+(\S+)", rule)
    return m.group(1) if m else None


class FakeIptables:
    def __init__(self) -> None:
        self.tables: dict[tuple[Family, str], Table] = {}
        self.restores = 0

    def _table(self, family: Family, table: str) -> Table:
        if table not in _BUILTIN:
            raise InvalidValueError("iptables table", table)
        key = (family, table)
        if key not in self.tables:
            self.tables[key] = {c: [] for c in _BUILTIN[table]}
        return self.tables[key]

    async def restore(self, family: Family, rules: str) -> None:
        self.restores += 1
        work: Table | None = None
        name = ""
        for number, line in enumerate(rules.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue

            def fail(why: str, n: int = number) -> CommandError:
                return CommandError(["iptables-restore", "--noflush"], 1, f"line {n}: {why}")

            if line.startswith("*"):
                name = line[1:]
                work = {c: list(r) for c, r in self._table(family, name).items()}
            elif work is None:
                raise fail("no table")
            elif line == "COMMIT":
                self.tables[(family, name)] = work
                work = None
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                if chain not in _BUILTIN[name]:
                    work[chain] = []  # declaring a user chain creates or flushes it
            else:
                self._apply(work, name, line.split(None, 2), fail)
        if work is not None:
            raise CommandError(["iptables-restore"], 1, "missing COMMIT")

    @staticmethod
    def _apply(
        work: Table, table: str, words: list[str], fail: Callable[[str], CommandError]
    ) -> None:
        op, chain = words[0], words[1] if len(words) > 1 else ""
        rest = words[2] if len(words) > 2 else ""
        if chain not in work:
            raise fail(f"chain {chain} does not exist")
        if op in ("-A", "-I"):
            position = 0
            if op == "-I" and rest.split(None, 1)[0].isdigit():
                number, _, rest = rest.partition(" ")
                position = int(number) - 1
            target = _jump_target(rest)
            if target and target not in _TARGETS and target not in work:
                raise fail(f"unknown target {target}")
            if op == "-A":
                work[chain].append(rest)
            else:
                work[chain].insert(position, rest)
        elif op == "-D":
            if rest not in work[chain]:
                raise fail("Bad rule (does a matching rule exist in that chain?)")
            work[chain].remove(rest)
        elif op == "-F":
            work[chain].clear()
        elif op == "-X":
            used = any(_jump_target(r) == chain for rules in work.values() for r in rules)
            if chain in _BUILTIN[table] or work[chain] or used:
                raise fail(f"cannot delete chain {chain}")
            del work[chain]
        else:
            raise fail(f"unknown command {op}")

    async def save(self, family: Family, table: str) -> str:
        chains = self._table(family, table)
        builtin = list(_BUILTIN[table])
        users = sorted(c for c in chains if c not in builtin)
        lines = [f"*{table}"]
        lines += [f":{c} ACCEPT [0:0]" for c in builtin] + [f":{c} - [0:0]" for c in users]
        lines += [f"-A {c} {r}" for c in builtin + users for r in chains[c]]
        return "\n".join([*lines, "COMMIT"]) + "\n"

    async def save_tables(self, family: Family) -> dict[str, str]:
        return {
            table: await self.save(family, table) for f, table in list(self.tables) if f is family
        }

    async def user_chains(self, family: Family) -> dict[str, frozenset[str]]:
        return {
            table: frozenset(c for c in chains if c not in _BUILTIN[table])
            for (f, table), chains in self.tables.items()
            if f is family
        }

    async def cleanup(self, family: Family, tables: Sequence[str] | None = None) -> None:
        await iptables_cleanup(self, family, tables)

    async def fingerprint(self, family: Family) -> int:
        return checksum_of(
            sorted(
                (table, sorted(chains.items()))
                for (f, table), chains in self.tables.items()
                if f is family
            )
        )


# ------------------------------------------------------------------- nftables


class FakeNftables:
    def __init__(self, tables: Iterable[tuple[str, str]] = ()) -> None:
        self.present = set(tables)
        self.deletes = 0  # transactions that deleted something

    def add_table(self, family: str, name: str) -> None:
        """Test hook: a table someone else (kube-proxy, an operator) made."""
        if family not in NFT_FAMILIES:
            raise InvalidValueError("nftables family", family)
        self.present.add((family, name))

    async def tables(self) -> set[tuple[str, str]]:
        return set(self.present)

    async def delete_tables(self, tables: Sequence[tuple[str, str]]) -> None:
        doomed = self.present & set(tables)
        if doomed:
            self.present -= doomed
            self.deletes += 1


# ------------------------------------------------------------------ conntrack


class FakeConntrack:
    def __init__(self) -> None:
        # (client, client port, vip, port, real, real port) of UDP entries
        self.entries: list[tuple[str, int, str, int, str, int]] = []

    def add_udp_entry(
        self, client: str, cport: int, vip: str, port: int, real: str, rport: int
    ) -> None:
        """Test hook: the kernel's insert_udp_entry."""
        client, vip, real = (str(ipaddress.ip_address(a)) for a in (client, vip, real))
        self.entries.append((client, cport, vip, port, real, rport))

    def _delete(
        self,
        vip: str,
        port: int,
        real: RealServerKey | None,
        keep: Collection[RealServerKey] = (),
    ) -> int:
        kept = {parse_real(k) for k in keep}
        only = parse_real(real) if real is not None else None
        left = [
            e
            for e in self.entries
            if not (e[2] == vip and e[3] == port and (only is None or (e[4], e[5]) == only))
            or (e[4], e[5]) in kept
        ]
        deleted = len(self.entries) - len(left)
        self.entries = left
        return deleted

    async def delete_udp_to_service(
        self, address: str, port: int, keep: Collection[RealServerKey] = ()
    ) -> int:
        return self._delete(parse_target(address, port)[0], port, None, keep)

    async def delete_udp_to_real_server(self, virtual: str, port: int, real: RealServerKey) -> int:
        return self._delete(parse_target(virtual, port)[0], port, real)

    async def close(self) -> None:
        pass


# -------------------------------------------------------------------- sysctls


# Set globally, from the initial network namespace only; readable from any.
GLOBAL_SETTINGS = frozenset({"net/netfilter/nf_conntrack_max", "nf_conntrack.hashsize"})


class FakeSysctls:
    """``init_netns=False`` behaves as in another network namespace (the global settings
    refuse writes); ``read_only`` names settings that refuse writes too (a read-only
    /proc/sys), a module parameter as ``MODULE.NAME``. ``writes`` records every write."""

    def __init__(
        self,
        release: str = "6.1.0-fake",
        values: Mapping[str, str] | None = None,
        available_modules: Iterable[str] = (
            "ip_vs",
            "ip_vs_rr",
            "ip_vs_wrr",
            "ip_vs_sh",
            "nf_conntrack",
        ),
        *,
        init_netns: bool = True,
        read_only: Iterable[str] = (),
    ) -> None:
        self.values = {
            "net/ipv4/vs/conntrack": "0",
            "net/ipv4/vs/conn_reuse_mode": "1",
            "net/ipv4/vs/expire_nodest_conn": "0",
            "net/ipv4/vs/expire_quiescent_template": "0",
            "net/ipv4/ip_forward": "0",
            "net/ipv4/conf/all/arp_ignore": "0",
            "net/ipv4/conf/all/arp_announce": "0",
            # The kernel's own conntrack defaults (a small machine).
            "net/netfilter/nf_conntrack_max": "65536",
            "net/netfilter/nf_conntrack_tcp_timeout_established": "432000",
            "net/netfilter/nf_conntrack_tcp_timeout_close_wait": "60",
            "net/netfilter/nf_conntrack_tcp_be_liberal": "0",
            "net/netfilter/nf_conntrack_udp_timeout": "30",
            "net/netfilter/nf_conntrack_udp_timeout_stream": "120",
            "kernel/osrelease": release,
        }
        self.values.update(values or {})
        self.parameters = {"nf_conntrack.hashsize": "16384"}
        self.read_only = set(read_only) | (set() if init_netns else set(GLOBAL_SETTINGS))
        self.writes: list[tuple[str, str]] = []
        self.available = set(available_modules)
        self.loaded: set[str] = set()
        self.modprobes: list[str] = []

    async def get(self, name: str) -> str:
        if name not in self.values:
            raise InvalidValueError("sysctl name", name, "no such sysctl")
        return self.values[name]

    def _write(self, store: dict[str, str], name: str, what: str, value: str) -> None:
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise InvalidValueError(what, value, "Invalid argument")
        if name in self.read_only:
            raise SysctlWriteError(what, value, "Permission denied")
        store[name] = value.strip()
        self.writes.append((name, value.strip()))

    async def set(self, name: str, value: str) -> None:
        await self.get(name)
        self._write(self.values, name, f"sysctl {name}", value)

    async def get_parameter(self, module: str, name: str) -> str:
        key = f"{module}.{name}"
        if key not in self.parameters:
            raise InvalidValueError("module parameter", key, "none such")
        return self.parameters[key]

    async def set_parameter(self, module: str, name: str, value: str) -> None:
        await self.get_parameter(module, name)
        key = f"{module}.{name}"
        self._write(self.parameters, key, f"module parameter {key}", value)

    async def kernel_release(self) -> str:
        return self.values["kernel/osrelease"]

    async def ensure_modules(self, names: Sequence[str]) -> None:
        for name in names:
            if name in self.loaded:
                continue
            self.modprobes.append(name)
            if name not in self.available:
                raise KernelModuleError(name, "modprobe: FATAL: Module not found")
            self.loaded.add(name)
