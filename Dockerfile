# The image the Helm chart runs, and a drop-in for kube-proxy: /usr/local/bin/kube-proxy
# starts ipvsproxy with the same arguments, so kubeadm's kube-proxy DaemonSet works with
# only its image changed. Build from the repository root:
#
#   docker build -t ipvsproxy/ipvsproxy:0.1.0 .     # the public base; pip reaches PyPI
#   bash scripts/build-image.sh                     # no registry, no network in the build
#
# BASE: a Debian bookworm image with python3 (3.11, with its venv module). The default is
# the public Python image; scripts/build-image.sh passes a base it makes from Debian
# packages, which already has the tools below.
ARG BASE=python:3.11-slim-bookworm

# The virtual environment, made in a stage of its own: no pip, wheel or source reaches the
# image. WHEELS says where ipvsproxy and its dependencies come from: "pypi" builds this
# checkout and fetches the dependencies (network needed); "context" installs only the
# wheels in packaging/image/wheels/ of the build context (scripts/build-image.sh puts
# them there, made on the host for the base's Python) and needs no network.
FROM ${BASE} AS venv
ARG WHEELS=pypi
COPY pyproject.toml README.md /src/
COPY ipvsproxy /src/ipvsproxy
COPY packaging/image/wheels/ /wheels/
RUN case "$WHEELS" in \
      pypi) from="/src" ;; \
      context) from="--no-index --find-links=/wheels ipvsproxy" ;; \
      *) echo "WHEELS is pypi or context, not '$WHEELS'" >&2; exit 1 ;; \
    esac \
    && python3 -m venv /tmp/pip \
    && python3 -m venv --without-pip /opt/ipvsproxy \
    && /tmp/pip/bin/pip --python /opt/ipvsproxy/bin/python install --no-cache-dir $from

FROM ${BASE}
# iptables (both backends; the proxy picks the one the node uses), ipset, conntrack and
# kmod (modprobe for ip_vs when loadKernelModules is on): installed when the base lacks
# them, as the public base does.
RUN missing=""; \
    for p in iptables ipset conntrack kmod; do \
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=venv /opt/ipvsproxy /opt/ipvsproxy
# kube-proxy is ipvsproxy under kubeadm's path: same program, same arguments.
RUN ln -s /opt/ipvsproxy/bin/ipvsproxy /usr/local/bin/ipvsproxy \
    && ln -s /opt/ipvsproxy/bin/ipvsproxy /usr/local/bin/kube-proxy
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ipvsproxy"]
