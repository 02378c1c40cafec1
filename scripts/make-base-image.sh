#!/usr/bin/env bash
# Make registry-free base images: debootstrap a Debian root filesystem from the mirror apt already uses and
# `docker import` it. Idempotent: does nothing when the tag already exists. Needs root and debootstrap.
#
# usage: scripts/make-base-image.sh [TAG]
#          Debian + python3 + numpy, no pip (default tag lstm-bench/base:bookworm-numpy): the test base of
#          numpy-reference and the throw-away images of the tests.
#        scripts/make-base-image.sh --python [--official] [TAG]
#          a stand-in for python:3.11-slim-bookworm (default tag lstm-bench/base:python3.11-slim-bookworm):
#          Debian bookworm's CPython 3.11 with headers, venv, pip, setuptools and wheel; `python3`, `python`,
#          `pip` on PATH; pip installs as root (the PEP 668 marker is removed) into /usr/local, where
#          /usr/local/lib/python3.11/site-packages (the official image's path) is the same folder as Debian's
#          dist-packages; apt works (the mirror below); the host's own CA certificates
#          (/usr/local/share/ca-certificates, e.g. a TLS-inspecting egress proxy) are trusted, so pip reaches
#          the package index from inside a build container. Build any python:3.11 image on it with
#          `--build-arg BASE_IMAGE=lstm-bench/base:python3.11-slim-bookworm`. --official also tags it
#          python:3.11.10-slim-bookworm (the Dockerfiles' default base), for a `docker build` with no build
#          argument; only on a host that has no registry: the real image is CPython 3.11.10, this is 3.11.2.
set -euo pipefail
kind=numpy
official=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) kind=python; shift ;;
    --official) official=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ "$kind" = python ]; then
  tag="${1:-lstm-bench/base:python3.11-slim-bookworm}"
  include=python3,python3-dev,python3-venv,python3-pip,ca-certificates
else
  tag="${1:-lstm-bench/base:bookworm-numpy}"
  include=python3-minimal,python3-numpy
fi
suite="${SUITE:-bookworm}"
official_tags=(python:3.11.10-slim-bookworm python:3.11-slim-bookworm)

alias_official() {
  [ "$official" = 1 ] || return 0
  for t in "${official_tags[@]}"; do docker tag "$tag" "$t"; echo "tagged $t (stand-in)"; done
}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already present"
  alias_official
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
root="$work/rootfs"
echo "debootstrap $suite ($include) from $mirror into $root ..."
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$work/log" 2>&1 \
  || { tail -n 30 "$work/log" >&2; exit 1; }
# `python` is what images and workloads call; Debian only ships python3.
ln -sf python3 "$root/usr/bin/python"

changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["python3"]')
if [ "$kind" = python ]; then
  pyver=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  # PEP 668: the official image lets root pip-install into the system Python; so must the stand-in.
  rm -f "$root/usr/lib/python$pyver/EXTERNALLY-MANAGED"
  [ -e "$root/usr/bin/pip" ] || ln -s pip3 "$root/usr/bin/pip"
  # Debian's pip installs into /usr/local/lib/pythonX.Y/dist-packages; the official image's folder is
  # site-packages. One folder under both names, so a Dockerfile that names either path works on both.
  mkdir -p "$root/usr/local/lib/python$pyver/dist-packages"
  ln -sfn dist-packages "$root/usr/local/lib/python$pyver/site-packages"
  # The host's extra trust anchors (none on most hosts) join the image's CA bundle.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
  chroot "$root" update-ca-certificates >/dev/null
  bundle=/etc/ssl/certs/ca-certificates.crt
  # Debian's pip already reads the system bundle; a pip upgraded inside an image would read certifi's instead.
  changes+=(--change "ENV LANG=C.UTF-8 PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle SSL_CERT_FILE=$bundle")
fi
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
tar -C "$root" -c . | docker import "${changes[@]}" - "$tag"
echo "made $tag"
alias_official
