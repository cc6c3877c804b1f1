#!/usr/bin/env bash
# TEST ONLY: build a stand-in for the official Python base image where it cannot be
# pulled (a machine that reaches Debian's mirror and the Python package index but no
# container registry), and tag it locally under the official name, so the unmodified
# scoring/Dockerfile builds on it in the container tests.
#
#   tests/standin-base-image.sh python:3.11-slim-trixie
#
# It is Debian bookworm (minbase) with its python3 and pip, labelled
# mlops.test-standin=true; it is never pushed and never used outside tests (an image built
# on it carries that label, and a real release is built where the official base pulls).
# Bookworm's Python is 3.11, so there is no stand-in for other versions. It trusts this
# machine's CA bundle, so that builds on it reach the package index through a
# TLS-inspecting proxy; the bundle lives in this base only, never in a layer of the
# scoring image.
set -euo pipefail

base=${1:?usage: $0 python:<version>-slim-trixie}
version=${base#python:}
version=${version%%-*}
if [ "$version" != 3.11 ]; then
    echo "stand-in: no stand-in for $base: Debian bookworm's Python is 3.11" >&2
    exit 3
fi
if [ "$(id -u)" != 0 ]; then
    echo "stand-in: building $base needs root (debootstrap)" >&2
    exit 3
fi
if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        debootstrap >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$work/root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
cp /etc/ssl/certs/ca-certificates.crt "$work/root/usr/local/share/ca-certificates/host-bundle.crt"
chroot "$work/root" update-ca-certificates >/dev/null 2>&1
# The official image's pip installs into the system Python; Debian's refuses (PEP 668).
rm -f "$work"/root/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
tar -C "$work/root" -c . | docker import \
    --change "LABEL mlops.test-standin=true" \
    --change "LABEL org.opencontainers.image.description=\"TEST ONLY: stand-in for the official $base, built from Debian bookworm packages by tests/standin-base-image.sh; never push it\"" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["python3"]' \
    - "$base" >/dev/null
echo "stand-in: tagged $base (test only) in $((SECONDS - started)) s"
