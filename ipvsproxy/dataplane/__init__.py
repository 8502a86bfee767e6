"""The kernel, one interface per subsystem: real implementations and in-memory fakes."""

from ipvsproxy import lean_import

# Before any module of this package imports pyroute2 (see lean_import): only the
# iproute and conntrack parts are used, not IPDB, NDB and every other netlink family.
lean_import.install("pyroute2", ("pyroute2",), needed=("pyroute2.netlink.exceptions",))
