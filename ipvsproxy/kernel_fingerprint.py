"""What the idle resync asks the kernel instead of reading it all.

A full resync exists to heal drift: someone (an operator, another agent, a crashed
release) changed what the proxy programmed. Finding that out used to mean dumping IPVS,
every address and every set, and saving the iptables tables, every sync period, on every
node: at 10,000 Services, seconds of CPU to find nothing to do. Each subsystem now gives
a fingerprint (see ``dataplane.interfaces``) that is cheap to take and changes whenever
what the proxy reads of it changes. The reconciler remembers the fingerprint it saw when
it last found the kernel to match its mirror, and does the full read only when the
kernel's differs, or when it changed the kernel itself since.
"""

from __future__ import annotations

from typing import NamedTuple

from ipvsproxy.dataplane.executor import Dataplane


class StateFingerprint(NamedTuple):
    """What ``read_owned`` and the node's addresses depend on."""

    ipvs: int
    addresses: int
    ipsets: int


async def state_fingerprint(dataplane: Dataplane) -> StateFingerprint:
    return StateFingerprint(
        await dataplane.ipvs.fingerprint(),
        await dataplane.addresses.fingerprint(),
        await dataplane.ipsets.fingerprint(),
    )
