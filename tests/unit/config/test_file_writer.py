"""--write-config-to's document: kube-proxy 1.36's shape, and it loads back to the same Config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ipvsproxy.config import (
    Config,
    FileReport,
    config_document,
    config_yaml,
    load_config_file,
    read_config_document,
    write_config_file,
)
from ipvsproxy.config.schema import Role, walk
from tests.unit.config.test_file_loader import FIXTURES, FULL


def paths(doc: object, prefix: str = "") -> set[str]:
    if not isinstance(doc, dict):
        return set()
    found = set()
    for key, value in doc.items():
        found.add(prefix + key)
        found |= paths(value, f"{prefix}{key}.")
    return found


def test_the_document_has_every_field_kube_proxy_writes() -> None:
    written = paths(config_document(Config()))
    # omitempty fields with empty values, as kube-proxy leaves them out; and the obsolete one.
    left_out = {
        "featureGates",
        "windowsRunAsService",
        "udpIdleTimeout",
        "logging.format",
        "logging.vmodule",
        "logging.options.json.splitStream",
        "logging.options.text.splitStream",
    }
    assert written == {path for path, _ in walk()} - left_out | {"apiVersion", "kind"}
    assert not {path for path, f in walk() if f.role is Role.OBSOLETE} & written


def test_defaults_read_like_kube_proxys_output() -> None:
    text = config_yaml(Config())
    doc = yaml.safe_load(text)
    assert list(doc) == sorted(doc)
    assert doc["mode"] == "ipvs"
    assert doc["configSyncPeriod"] == "15m0s"
    assert doc["conntrack"]["tcpEstablishedTimeout"] == "24h0m0s"
    assert doc["conntrack"]["tcpCloseWaitTimeout"] == "1h0m0s"
    assert doc["ipvs"] == {
        "excludeCIDRs": None,
        "minSyncPeriod": "1s",
        "scheduler": "rr",
        "strictARP": False,
        "syncPeriod": "30s",
        "tcpFinTimeout": "0s",
        "tcpTimeout": "0s",
        "udpTimeout": "0s",
    }
    # kube-proxy 1.31+: the sync periods only in the active mode's section.
    assert doc["iptables"]["syncPeriod"] == doc["nftables"]["syncPeriod"] == "0s"
    assert doc["clientConnection"] == {
        "acceptContentTypes": "",
        "burst": 10,
        "contentType": "application/vnd.kubernetes.protobuf",
        "kubeconfig": "",
        "qps": 5,
    }
    assert doc["logging"]["flushFrequency"] == "5s"
    assert "format" not in doc["logging"]  # "auto" has no name in the file
    assert (doc["healthzBindAddress"], doc["metricsBindAddress"]) == (
        "0.0.0.0:10256",
        "127.0.0.1:10249",
    )
    assert (doc["oomScoreAdj"], doc["iptables"]["masqueradeBit"]) == (-999, 14)


@pytest.mark.parametrize(
    "config",
    [
        Config(),
        load_config_file(str(FIXTURES / "kubeadm-1.19.yaml"))[0],
        load_config_file(str(FIXTURES / "kubeadm-1.36.yaml"))[0],
        read_config_document(FULL)[0],
        Config(log_format="console", feature_gates=(("WatchList", False),), api_qps=2.5),
        Config(healthz_bind_address="[::]:10256", bind_address="::", hostname_override="n1"),
    ],
    ids=["flag-defaults", "kubeadm-1.19", "kubeadm-1.36", "full", "logging", "ipv6"],
)
def test_the_document_loads_back_to_the_same_config(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "out.yaml"
    write_config_file(config, str(path))
    assert load_config_file(str(path)) == (config, FileReport())
