#!/usr/bin/env bash
# Build the container image from the Dockerfile with no registry and no network inside
# the build (as root, with podman; scripts/setup.sh installs what it needs):
#
#   bash scripts/build-image.sh [--tag IMAGE] [--rebuild-base]
#
# 1. The base: Debian bookworm (minbase) with python3 3.11 and its venv module, iptables,
#    ipset, conntrack and kmod, made by mmdebstrap from this host's apt sources for Debian
#    (IPVSPROXY_BASE_SOURCES, default /etc/apt/sources.list.d/debian.sources; they must
#    name bookworm) and imported into podman as localhost/ipvsproxy-base:bookworm-HASH,
#    HASH naming the recipe below. It is made only when missing (or with --rebuild-base).
# 2. The wheels of ipvsproxy (from this checkout) and of its dependencies, for the base's
#    Python: CPython 3.11 on glibc 2.36, whatever Python this host runs.
# 3. podman build --network=none of the Dockerfile with BASE=that base and WHEELS=context:
#    the wheels lie in packaging/image/wheels/ during the build, and are removed after it.
#
# IMAGE defaults to localhost/ipvsproxy:VERSION. The last line names the image, its size
# and the time each step took.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' ipvsproxy/__init__.py)
tag="localhost/ipvsproxy:$version"
rebuild_base=false
while (( $# )); do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --tag=*) tag="${1#--tag=}"; shift ;;
    --rebuild-base) rebuild_base=true; shift ;;
    *) echo "build-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

# bookworm's crun (1.8) refuses to start anything on a host that mounts cgroup v1
# controllers and also has a controller enabled in the cgroup v2 hierarchy ("cgroups in
# hybrid mode not supported, drop all controllers from cgroupv2"), as this project's CI
# machines do; runc runs on v1, v2 and hybrid hosts alike.
podman=(podman "--runtime=${IPVSPROXY_OCI_RUNTIME:-runc}")

# The base's recipe: changing any of it names a new base.
suite=bookworm
python_version=3.11   # bookworm's python3; the wheels are chosen for it
glibc_minor=36        # bookworm's glibc: 2.36
packages=(python3 python3-venv iptables ipset conntrack kmod)
mmdebstrap_args=(
  --mode=root --variant=minbase
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  "--include=$(IFS=,; echo "${packages[*]}")"
  # No documentation, manual pages or translations in the image.
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)
import_changes=(
  --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV=LANG=C.UTF-8'
  --change 'CMD=["/bin/bash"]'
)
recipe_hash=$(printf '%s\n' "$suite" "${mmdebstrap_args[@]}" "${import_changes[@]}" \
  | sha256sum | cut -c1-12)
base="localhost/ipvsproxy-base:$suite-$recipe_hash"

wheels=packaging/image/wheels
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -f "$wheels"/*.whl' EXIT
seconds() { echo "$((SECONDS - $1))s"; }

# 1. The base.
start=$SECONDS
if [[ $rebuild_base == false ]] && podman image exists "$base"; then
  base_took="cached"
else
  sources=${IPVSPROXY_BASE_SOURCES:-/etc/apt/sources.list.d/debian.sources}
  if [[ ! -f $sources ]] || ! grep -Eq "^[^#]*\b$suite\b" "$sources"; then
    echo "build-image: $sources names no $suite suite; set IPVSPROXY_BASE_SOURCES to an apt" \
      "sources file (one-line or deb822) for Debian $suite" >&2
    exit 1
  fi
  echo "build-image: making the base $base with mmdebstrap (sources: $sources)"
  if ! mmdebstrap "${mmdebstrap_args[@]}" "$suite" "$tmp/base.tar" "$sources" \
      >"$tmp/mmdebstrap.log" 2>&1; then
    tail -n 30 "$tmp/mmdebstrap.log" >&2
    echo "build-image: mmdebstrap failed" >&2
    exit 1
  fi
  if ! tar -tf "$tmp/base.tar" | grep -Ex "(\./)?usr/bin/python$python_version" >/dev/null; then
    echo "build-image: the base has no python$python_version, which the wheels are for" >&2
    exit 1
  fi
  old_base=$(podman image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
  podman import --quiet "${import_changes[@]}" "$tmp/base.tar" "$base" >/dev/null
  rm -f "$tmp/base.tar"
  # The base this one replaces, and those of other recipes, are not used any more (an
  # image still built on one keeps it).
  { [[ -n $old_base ]] && echo "$old_base"
    podman images --format '{{.Repository}}:{{.Tag}}' localhost/ipvsproxy-base | grep -vx "$base"
  } | xargs -r -n1 podman rmi >/dev/null 2>&1 || true
  base_took="made in $(seconds "$start")"
fi

# 2. The wheels, for CPython $python_version on glibc 2.$glibc_minor (this host's pip). Every
# manylinux tag that glibc runs is named: older pips do not infer the lower ones.
start=$SECONDS
platforms=()
for (( minor = glibc_minor; minor >= 5; minor-- )); do
  platforms+=(--platform "manylinux_2_${minor}_$(uname -m)")
done
for legacy in manylinux2014 manylinux2010 manylinux1; do
  platforms+=(--platform "${legacy}_$(uname -m)")
done
pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
  python3 -m venv "$tmp/pip"
  pip=("$tmp/pip/bin/pip")
fi
# ipvsproxy's wheel is built from a copy of this checkout's files, so no build/ left in
# the checkout by an earlier build can add stale modules to it.
mkdir "$tmp/src"
tar -c --exclude=__pycache__ pyproject.toml README.md ipvsproxy | tar -x -C "$tmp/src"
rm -f "$wheels"/*.whl
if ! { "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" "$tmp/src" \
      && "${pip[@]}" download --quiet --dest "$wheels" --only-binary=:all: \
        --implementation cp --python-version "$python_version" \
        --abi "cp${python_version/./}" "${platforms[@]}" \
        "$wheels/ipvsproxy-$version-py3-none-any.whl"; } >"$tmp/pip.log" 2>&1; then
  tail -n 30 "$tmp/pip.log" >&2
  echo "build-image: building the wheels failed" >&2
  exit 1
fi
wheels_took=$(seconds "$start")

# 3. The image, with no network. --layers=false keeps no intermediate images; the image
# this one replaces under the same tag is removed.
start=$SECONDS
old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if ! "${podman[@]}" build --pull=never --network=none --layers=false \
    --build-arg "BASE=$base" --build-arg WHEELS=context \
    --file Dockerfile --tag "$tag" . >"$tmp/build.log" 2>&1; then
  tail -n 30 "$tmp/build.log" >&2
  echo "build-image: podman build failed" >&2
  exit 1
fi
new=$(podman image inspect --format '{{.Id}}' "$tag")
if [[ -n $old && $old != "$new" ]]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
image_took=$(seconds "$start")

size=$(podman image inspect --format '{{.Size}}' "$tag")
base_size=$(podman image inspect --format '{{.Size}}' "$base")
echo "build-image: $tag ($((size / 1000000)) MB; base $base, $((base_size / 1000000)) MB):" \
  "base $base_took, wheels $wheels_took, image $image_took"
