"""What the proxy owns among IPVS virtual servers (pure).

A virtual server is the proxy's when its address is bound on kube-ipvs0 (ClusterIP,
externalIP, load balancer VIPs) or when it is one of the node-address NodePort servers
the proxy programs; never when its address is inside ``--ipvs-exclude-cidrs``. Everything
else (an operator's own ``ipvsadm`` services) is left alone by every cleanup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence

from ipvsproxy.model import VirtualServerKey


def is_owned_virtual_server(
    key: VirtualServerKey,
    bound_addresses: Collection[str],
    node_port_keys: Collection[VirtualServerKey],
    exclude_cidrs: Sequence[str] = (),
) -> bool:
    address = ipaddress.ip_address(key.address)
    for cidr in exclude_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == address.version and address in net:
            return False
    return key.address in bound_addresses or key in node_port_keys
