#!/usr/bin/env bash
# Make a Docker engine and the local base image available for the container tests.
#
#   bash .ci/docker.sh            # idempotent: skips every step already done
#
# 1. Installs Debian's docker.io (and debootstrap) with apt if `dockerd` is missing.
# 2. Starts dockerd in the background (log: /var/log/backbone-dockerd.log) unless an engine answers.
# 3. Builds `backbone/python-base:3.11` from Debian bookworm packages (debootstrap minbase +
#    `docker import`) unless the image exists: Docker Hub is not reachable here, so app/Dockerfile is
#    built with `--build-arg BASE_IMAGE=backbone/python-base:3.11`. The host's CA bundle is copied in
#    so that pip inside a build reaches PyPI through this network.
#
# Environment: BASE_IMAGE_TAG (default backbone/python-base:3.11), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), DOCKERD_LOG, DOCKER_WAIT_SECONDS (default 60).
set -euo pipefail

TAG="${BASE_IMAGE_TAG:-backbone/python-base:3.11}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/backbone-dockerd.log}"
WAIT="${DOCKER_WAIT_SECONDS:-60}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

say() { printf '[docker.sh] %s\n' "$*"; }
die() {
    printf '[docker.sh] ERROR: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "needs root for: $*"
    else
        die "needs root (or passwordless sudo) for: $*"
    fi
}

engine_up() { docker info >/dev/null 2>&1; }

# --- 1. packages ---------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null ||
        die "apt-get update failed"
    as_root apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
        "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi

# --- 2. engine -----------------------------------------------------------------------------------
if ! engine_up; then
    if command -v pgrep >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
        say "dockerd is running but not answering yet; waiting"
    else
        say "starting dockerd in the background (log: $DOCKERD_LOG)"
        as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
        # Plain defaults work in this sandbox (overlay2, iptables). If a kernel lacks overlayfs or
        # netfilter, set DOCKERD_ARGS, e.g. "--storage-driver=vfs --iptables=false".
        # shellcheck disable=SC2086
        as_root nohup dockerd ${DOCKERD_ARGS:-} >"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 "$WAIT"); do
        engine_up && break
        sleep 1
    done
    engine_up || die "the Docker engine did not answer within ${WAIT}s; see $DOCKERD_LOG:
$(tail -n 20 "$DOCKERD_LOG" 2>/dev/null || true)"
fi

# --- 3. base image -------------------------------------------------------------------------------
if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "engine up; base image $TAG present"
    exit 0
fi
[ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (install ca-certificates)"

say "building $TAG from Debian bookworm (debootstrap, a few minutes)"
work="$(mktemp -d /tmp/backbone-rootfs.XXXXXX)"
cleanup() { as_root rm -rf "$work"; }
trap cleanup EXIT
rootfs="$work/rootfs"

as_root debootstrap --variant=minbase \
    --include=ca-certificates,python3,python3-venv,python3-pip,python-is-python3 \
    bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed; last lines:
$(tail -n 20 "$work/debootstrap.log")"

# The host's bundle holds the CA of this network's TLS proxy, if any: pip in a build needs it.
as_root cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Slim the image: package caches, docs, logs. Python stays complete.
as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*

as_root tar -C "$rootfs" -c . |
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        - "$TAG" >/dev/null || die "docker import failed"

docker run --rm "$TAG" python -c 'import ssl, venv, ensurepip' ||
    die "$TAG was built but python3 (ssl, venv, ensurepip) does not work in it"
say "built $TAG"
