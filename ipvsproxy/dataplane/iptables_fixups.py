"""What a node's saved tables say must change besides the contents of our chains (pure).

Our chains are rewritten whole at every sync (declared, so flushed, then filled). Two
things are outside them and are read from ``iptables-save`` first:

- **Jumps** from the built-in chains to ours: exactly each of ``JUMPS``, once. A jump
  to one of our chains that is not exactly one of ours is someone else's variant (kube-
  proxy's iptables mode jumps to KUBE-PROXY-FIREWALL from OUTPUT too, and only for new
  connections) and is deleted with the duplicates; a missing one is inserted first.
- **Leftovers** of kube-proxy's other modes and releases, and of older releases of this
  proxy, recognised by name and table only (``LEFTOVER_CHAINS``, ``LEFTOVER_PREFIXES``):
  iptables mode's per-Service chains (KUBE-SVC-, KUBE-SEP-, ...), its filter
  KUBE-SERVICES with a REJECT rule for every Service that had no endpoints, and the
  like. Every rule of another chain that jumps to one is deleted, then each is flushed
  and deleted. Rules in our own chains that jump to them go with the flush of ours.

Both come as restore lines for the table's block, after our chains are declared and
before our rules: one ``iptables-restore`` per family then replaces the old state with
ours atomically, per table, so no packet meets a table with neither. Nothing that is
not ours or a known leftover is ever named: an operator's chains and rules, and
kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, KUBE-MARK-DROP), stay.

Sources of the leftover names: kube-proxy's pkg/proxy/iptables/proxier.go (its chains,
the per-Service prefixes) and cleanup.go; pkg/proxy/ipvs/proxier.go before 1.21 (nat
KUBE-FIREWALL for load balancer source ranges).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ipvsproxy.dataplane.iptables_rules import BUILTIN_CHAINS, JUMPS, OWNED_CHAINS

LEFTOVER_CHAINS: Mapping[str, frozenset[str]] = {
    "nat": frozenset(
        {
            "KUBE-NODEPORTS",  # iptables mode
            "KUBE-PROXY-CANARY",  # iptables mode's flush detector
            "KUBE-FIREWALL",  # IPVS mode <= 1.20: LB source ranges (kubelet's is in filter)
        }
    ),
    "filter": frozenset(
        {
            "KUBE-SERVICES",  # iptables mode: REJECT for Services without endpoints
            "KUBE-EXTERNAL-SERVICES",  # the same for external IPs, LB IPs, NodePorts
            "KUBE-NODEPORTS",  # iptables mode: health check node ports
            "KUBE-PROXY-CANARY",
        }
    ),
    "mangle": frozenset({"KUBE-PROXY-CANARY"}),
}
# iptables mode's per-Service and per-endpoint chains (KUBE-XLB- before 1.24).
LEFTOVER_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "nat": ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-", "KUBE-XLB-"),
}


def is_leftover(table: str, chain: str) -> bool:
    return chain in LEFTOVER_CHAINS.get(table, ()) or chain.startswith(
        LEFTOVER_PREFIXES.get(table, ())
    )


class SavedRule:
    """One ``-A CHAIN rest`` line of a save."""

    __slots__ = ("chain", "rest", "target")

    def __init__(self, line: str) -> None:
        words = line.split()
        self.chain = words[1]
        self.rest = line[len(f"-A {self.chain} ") :]
        self.target = _target(words)


def saved_rules(saved: str) -> list[SavedRule]:
    return [SavedRule(line) for line in saved.splitlines() if line.startswith("-A ")]


def saved_chains(saved: str) -> set[str]:
    return {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}


def _target(words: Sequence[str]) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return None


def jump_fixups(table: str, saved: str) -> list[str]:
    """Lines that leave each of our jumps in ``table`` exactly once and no other jump from a
    built-in chain to our chains."""
    ours = set(OWNED_CHAINS.get(table, ()))
    wanted = {(j.chain, j.spec) for j in JUMPS if j.table == table}
    kept: set[tuple[str, str]] = set()
    lines: list[str] = []
    for rule in saved_rules(saved):
        if rule.chain not in BUILTIN_CHAINS[table] or rule.target not in ours:
            continue
        if (rule.chain, rule.rest) in wanted and (rule.chain, rule.rest) not in kept:
            kept.add((rule.chain, rule.rest))
        else:
            lines.append(f"-D {rule.chain} {rule.rest}")
    # Inserted first, as kube-proxy's EnsureRule(Prepend) does.
    lines += [f"-I {chain} 1 {spec}" for chain, spec in sorted(wanted - kept)]
    return lines


def leftover_fixups(table: str, saved: str) -> list[str]:
    """Lines that unlink, flush and delete ``table``'s leftovers (see the module doc)."""
    leftovers = sorted(c for c in saved_chains(saved) if is_leftover(table, c))
    if not leftovers:
        return []
    gone = set(leftovers) | set(OWNED_CHAINS.get(table, ()))  # ours are flushed anyway
    lines = [
        f"-D {rule.chain} {rule.rest}"
        for rule in saved_rules(saved)
        if rule.chain not in gone and rule.target in leftovers
    ]
    lines += [f"-F {chain}" for chain in leftovers]
    lines += [f"-X {chain}" for chain in leftovers]
    return lines


def table_fixups(table: str, saved: str) -> list[str]:
    """Every fixup of ``table`` for a sync that rewrites our chains, given its save."""
    return jump_fixups(table, saved) + leftover_fixups(table, saved)


def cleanup_restore(saved: Mapping[str, str]) -> str:
    """Restore text that removes our chains and the leftovers, given ``{table: save}``.

    Deletes every rule of another chain that jumps to one of them, flushes them and
    deletes them. Nothing else is named, so nothing else changes. Empty when there is
    nothing to do.
    """
    out: list[str] = []
    for table, text in saved.items():
        present = saved_chains(text)
        ours = sorted(set(OWNED_CHAINS.get(table, ())) & present)
        leftovers = sorted(c for c in present if is_leftover(table, c))
        gone = set(ours) | set(leftovers)
        if not gone:
            continue
        lines = [f"*{table}"]
        lines += [
            f"-D {rule.chain} {rule.rest}"
            for rule in saved_rules(text)
            if rule.chain not in gone and rule.target in gone
        ]
        lines += [f"-F {chain}" for chain in sorted(gone)]
        lines += [f"-X {chain}" for chain in sorted(gone)]
        out += [*lines, "COMMIT"]
    return "\n".join(out) + "\n" if out else ""
