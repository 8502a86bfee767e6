"""ipvsproxy: a Kubernetes service proxy that programs the kernel's IPVS."""

__version__ = "0.1.0"
