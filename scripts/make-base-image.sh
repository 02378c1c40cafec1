#!/usr/bin/env bash
# Make a minimal Debian + python3 + numpy base image without any registry:
# debootstrap a root filesystem from the Debian mirror apt already uses and `docker import` it.
# Idempotent: does nothing when the tag already exists. Needs root and debootstrap.
#
# usage: scripts/make-base-image.sh [TAG]      (default lstm-bench/base:bookworm-numpy)
set -euo pipefail
tag="${1:-lstm-bench/base:bookworm-numpy}"
suite="${SUITE:-bookworm}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }

# The mirror comes from this host's apt configuration, so no host name is written into the repo.
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | grep -v security | head -n1 | awk '{print $2}' || true)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in apt sources; set DEBIAN_MIRROR" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debootstrap $suite from $mirror into $work/rootfs ..."
debootstrap --variant=minbase --include=python3-minimal,python3-numpy "$suite" "$work/rootfs" "$mirror" >"$work/log" 2>&1 \
  || { tail -n 30 "$work/log" >&2; exit 1; }
# python3-numpy pulls in python3 itself; `python` is what images and workloads call.
ln -sf python3 "$work/rootfs/usr/bin/python"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$tag"
echo "made $tag"
