"""What kube-proxy's modes leave on a node, from tests/fixtures/kube_proxy (see each file's
head for its upstream source), with the test's own addresses filled in."""

from __future__ import annotations

import string
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube_proxy"

# The fixtures' Services (kube-proxy's own test scenario).
SVC1 = "172.30.0.41"  # two endpoints: POD1, POD2
SVC3 = "172.30.0.43"  # a NodePort, one endpoint: POD3
SVC6 = "172.30.0.46"  # no endpoints: iptables mode REJECTs it
SERVICE_PORT = 80
IPTABLES_MODES = ("iptables-mode-1.18", "iptables-mode-1.22", "iptables-mode-1.33")
IPVS_MODES = ("ipvs-mode-1.19", "ipvs-mode-1.30")


def fixture(name: str, **values: str) -> str:
    """The fixture's text with ``${NAME}`` placeholders filled from ``values`` (POD1, POD2,
    POD3, CLUSTER_CIDR, NODE_PORT, NODE_IP) and its comment lines left out."""
    text = (FIXTURES / name).read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return string.Template(body + "\n").substitute(values)


def default_values(pods: tuple[str, str, str], node_ip: str = "192.168.0.2") -> dict[str, str]:
    return {
        "POD1": pods[0],
        "POD2": pods[1],
        "POD3": pods[2],
        "CLUSTER_CIDR": "10.244.0.0/16",
        "NODE_PORT": "30003",
        "NODE_IP": node_ip,
    }
