# The image the Helm chart runs. Build from the repository root:
#   docker build -t ipvsproxy/ipvsproxy:0.1.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ipvsproxy ./ipvsproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# iptables (both backends; the proxy picks the one the node uses), ipset,
# conntrack and kmod (modprobe for ip_vs when loadKernelModules is on).
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ipset conntrack kmod \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ipvsproxy"]
