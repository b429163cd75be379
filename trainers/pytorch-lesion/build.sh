#!/usr/bin/env bash
# Builds the PyTorch example trainer's image the way an ML engineer builds theirs, offline from
# container registries and reproducibly:
#   1. mmdebstrap: a Debian bookworm minbase rootfs with python3-torch and python3-numpy from
#      Debian's archive (docs, man pages and locales left out), every timestamp at
#      SOURCE_DATE_EPOCH, wrapped as a one-layer OCI image in an oci-archive (oci_base.py);
#   2. buildah build of the Containerfile: FROM that oci-archive, COPY the SDK and train.py
#      (one layer each), ENTRYPOINT; --timestamp fixed; pushed as an uncompressed oci-archive.
# Each stage is cached under $RAPHA_CACHE/pytorch-lesion/, keyed by a hash of its inputs: a
# second run with the same inputs builds nothing. Prints the oci-archive's path.
#
# Usage: trainers/pytorch-lesion/build.sh [--key PRIVATE_KEY --out BUNDLE_DIR]
#   with --key, also signs the image into a bundle with `rapha bundle sign` ($RAPHA_BIN or
#   `rapha` on PATH) and the predicate trainers/pytorch-lesion/trainer.toml.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${RAPHA_CACHE:-$HOME/.cache/rapha}/pytorch-lesion"
key="" bundle=""
while [ $# -gt 0 ]; do
    case "$1" in
        --key) key="$2"; shift 2 ;;
        --out) bundle="$2"; shift 2 ;;
        *) echo "usage: build.sh [--key PRIVATE_KEY --out BUNDLE_DIR]" >&2; exit 2 ;;
    esac
done
if [ -n "$key" ] && [ -z "$bundle" ]; then echo "build.sh: --key needs --out" >&2; exit 2; fi

# Fixed build time (2026-01-01T00:00:00Z): every file and config timestamp in the image.
export SOURCE_DATE_EPOCH=1767225600
suite=bookworm
mirror="${RAPHA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3-torch,python3-numpy
mkdir -p "$cache"
log() { printf '    %s\n' "$*" >&2; }

# --- 1. base rootfs -> oci-archive -------------------------------------------------------
base_args=(--variant=minbase --mode=root --include="$packages" --format=tar --skip=output/dev
    --aptopt='APT::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
    "$suite")
base_key="$( (echo "${base_args[*]} $mirror $SOURCE_DATE_EPOCH"; cat "$here/oci_base.py") \
    | sha256sum | cut -c1-16)"
base="$cache/base-$base_key.oci.tar"
if [ -f "$base" ]; then
    log "base image: cached ($base)"
else
    log "base image: mmdebstrap $suite minbase + $packages (about a minute)"
    t0=$SECONDS
    rm -f "$cache"/base-*.oci.tar "$cache"/rootfs-*.tar
    mmdebstrap --quiet "${base_args[@]}" "$cache/rootfs-$base_key.tar" "$mirror" >&2
    python3 "$here/oci_base.py" "$cache/rootfs-$base_key.tar" "$base"
    rm -f "$cache/rootfs-$base_key.tar"
    log "base image: built in $((SECONDS - t0)) s ($(du -h "$base" | cut -f1))"
fi

# --- 2. buildah build -> oci-archive -----------------------------------------------------
app_key="$( (echo "$base_key"; cd "$root" && cat trainers/pytorch-lesion/Containerfile \
    trainers/pytorch-lesion/train.py trainers/pytorch-lesion/build.sh \
    sdk/python/rapha_trainer/*.py) | sha256sum | cut -c1-16)"
image="$cache/image-$app_key.oci.tar"
if [ -f "$image" ]; then
    log "trainer image: cached ($image)"
else
    log "trainer image: buildah build (Containerfile, base $base_key)"
    t0=$SECONDS
    # A private, throw-away storage: nothing of the host's container storage is used or left.
    store="$cache/buildah-$app_key"
    rm -rf "$store" "$cache"/image-*.oci.tar
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' EXIT
    mkdir -p "$ctx/rapha_trainer"
    cp "$root"/sdk/python/rapha_trainer/*.py "$ctx/rapha_trainer/"
    cp "$here/train.py" "$here/Containerfile" "$ctx/"
    buildah_g=(--root "$store/root" --runroot "$store/run" --storage-driver "${RAPHA_BUILDAH_DRIVER:-overlay}")
    buildah "${buildah_g[@]}" build --quiet --timestamp "$SOURCE_DATE_EPOCH" \
        --identity-label=false --layers \
        --build-arg "BASE=oci-archive:$base" -f "$ctx/Containerfile" -t pytorch-lesion "$ctx" >&2
    log "trainer image: built in $((SECONDS - t0)) s, exporting"
    buildah "${buildah_g[@]}" push --quiet \
        pytorch-lesion "oci-archive:$image.partial:pytorch-lesion" >&2
    mv "$image.partial" "$image"
    buildah "${buildah_g[@]}" rmi --all >/dev/null 2>&1 || true
    rm -rf "$store"
    log "trainer image: built in $((SECONDS - t0)) s ($(du -h "$image" | cut -f1))"
fi

if [ -n "$key" ]; then
    "${RAPHA_BIN:-rapha}" bundle sign --key "$key" --image "$image" \
        --predicate "$here/trainer.toml" --out "$bundle" >&2
fi
echo "$image"
