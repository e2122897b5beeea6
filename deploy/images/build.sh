#!/usr/bin/env bash
# make images: build the service images flywheel/<service>:<version> from the one lock file.
#
#   deploy/images/build.sh                      # all five
#   deploy/images/build.sh serving registry     # some
#   BASE_IMAGE=python:3.11-slim-bookworm deploy/images/build.sh   # a base from your registry
#   EXTRAS=alibi deploy/images/build.sh monitor # monitor with the BSL-1.1 alibi-detect backend
#
# No image registry is needed. Without BASE_IMAGE the base is Debian bookworm with its CPython
# 3.11, made by debootstrap from the Debian mirror and `docker import`ed (cached as a tarball).
# Each build context is prepared here: requirements exported from uv.lock with hashes, the
# wheels they name (pip download, host side), our packages built as wheels. `docker build` then
# runs with --network none. Where no Docker engine answers but dockerd is installed (or
# installable from Debian, as root), a private dockerd is started for the build without touching
# the firewall (--iptables=false, no bridge) and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.local/bin:$PATH"
UV=$(command -v uv || echo "python3 -m uv")

ALL=(ingest registry trainer serving monitor)
SERVICES=("$@")
(( ${#SERVICES[@]} )) || SERVICES=("${ALL[@]}")
STATE=${FLYWHEEL_IMAGES_STATE:-.flywheel/images}
CACHE=${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}/images
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=flywheel/base:$SUITE-py3.11
BASE=${BASE_IMAGE:-$LOCAL_BASE}
EXTRAS=${EXTRAS:-}
mkdir -p "$STATE" "$CACHE"
STATE=$(cd "$STATE" && pwd)

log() { echo "images: $*"; }
die() { echo "images: ERROR: $*" >&2; exit 1; }
now() { date +%s; }
human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 B"; }

for s in "${SERVICES[@]}"; do
  [[ " ${ALL[*]} " == *" $s "* ]] || die "unknown service '$s' (${ALL[*]})"
done

# --- a Docker engine (started here if none answers; stopped on exit), version_of, free_port -------
# shellcheck source=deploy/images/lib.sh
source deploy/images/lib.sh
trap stop_dockerd EXIT

# --- the base image ------------------------------------------------------------------------------
base() {
  if [[ $BASE != "$LOCAL_BASE" ]]; then
    docker image inspect "$BASE" >/dev/null 2>&1 || docker pull "$BASE" \
      || die "BASE_IMAGE $BASE is neither local nor pullable"
    log "base: $BASE (given)"
    return
  fi
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    log "base: $LOCAL_BASE present"
    return
  fi
  local tarball=$CACHE/base-$SUITE-py3.11.tar
  if [[ ! -f $tarball ]]; then
    [[ $(id -u) -eq 0 ]] || die "building the base needs root (debootstrap); or pass BASE_IMAGE"
    if ! command -v debootstrap >/dev/null; then
      log "base: apt-get install debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >"$STATE/apt-debootstrap.log" 2>&1 \
        || die "apt-get install debootstrap failed (see $STATE/apt-debootstrap.log)"
    fi
    local t root
    t=$(now)
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    log "base: debootstrap --variant=minbase $SUITE from $MIRROR with python3 (≈ 90 s)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
      || { tail -20 "$STATE/debootstrap.log"; rm -rf "$root"; die "debootstrap failed"; }
    # What an image does not need: package lists and caches, docs, man pages, locales.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/usr/share/locale/* "$root"/tmp/*
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    log "base: root filesystem in $(( $(now) - t )) s, $(human "$(stat -c %s "$tarball")") ($tarball)"
  fi
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE + python3 python3-venv ca-certificates" \
    "$tarball" "$LOCAL_BASE" >/dev/null
  log "base: imported $LOCAL_BASE"
}

# --- build contexts ------------------------------------------------------------------------------
context() {  # context SERVICE -> $STATE/ctx/SERVICE
  local svc=$1 ctx=$STATE/ctx/$1 extras=(--extra s3)
  [[ $svc == monitor && -n $EXTRAS ]] && extras+=(--extra "$EXTRAS")
  rm -rf "$ctx" && mkdir -p "$ctx/wheels"
  $UV export --quiet --frozen --no-dev --no-emit-workspace --no-header --format requirements-txt \
    --package "flywheel-$svc" "${extras[@]}" -o "$ctx/requirements.txt"
  # Wheels for this machine's platform (x86_64 glibc, CPython 3.11, as the base). pip's cache
  # keeps a second build offline-fast; hashes are checked here and again in the image.
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --dest "$ctx/wheels" -r "$ctx/requirements.txt"
  local member
  for member in $(own_packages "$svc"); do
    $UV build --quiet --wheel --out-dir "$ctx/wheels" "$member" >/dev/null 2>&1 \
      || $UV build --wheel --out-dir "$ctx/wheels" "$member"
  done
  # The files the ingest and trainer targets copy, in every context: the legacy builder builds
  # every target before the one asked for (BuildKit only those it needs).
  local spec
  for spec in examples/*/flywheel.yaml; do
    mkdir -p "$ctx/$(dirname "$spec")" && cp "$spec" "$ctx/$spec"
  done
  cp uv.lock "$ctx/uv.lock"
}

# --- main ------------------------------------------------------------------------------------------
T0=$(now)
engine
base
# The legacy builder where buildx is absent (Debian's docker.io has none); BuildKit otherwise.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
summary=()
for svc in "${SERVICES[@]}"; do
  t=$(now)
  version=$(version_of "$svc")
  tag=flywheel/$svc:$version
  log "$svc: preparing the build context (lock export, wheels)"
  context "$svc"
  log "$svc: docker build -> $tag (base $BASE)"
  docker build --network none --quiet --target "$svc" \
    --build-arg "BASE_IMAGE=$BASE" --build-arg "PACKAGES=$(image_packages "$svc")" \
    --label "org.opencontainers.image.title=flywheel-$svc" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.created=$CREATED" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.base.name=$BASE" \
    -f deploy/images/Dockerfile -t "$tag" "$STATE/ctx/$svc" >"$STATE/build-$svc.log" 2>&1 \
    || { tail -30 "$STATE/build-$svc.log"; die "$svc: docker build failed (log: $STATE/build-$svc.log)"; }
  # The image starts: its package imports and the CLI answer, as the non-root user, read-only.
  docker run --rm --network none --read-only --tmpfs /tmp "$tag" \
    python -c "import flywheel_$svc, flywheel_shared.storage, s3fs; print('ok')" >/dev/null \
    || die "$svc: the image does not import its package"
  size=$(docker image inspect --format '{{.Size}}' "$tag")
  user=$(docker image inspect --format '{{.Config.User}}' "$tag")
  secs=$(( $(now) - t ))
  log "$svc: built $tag in ${secs}s, $(human "$size"), user $user"
  summary+=("$(printf '%-22s %6ss %10s' "$tag" "$secs" "$(human "$size")")")
done
# --- smoke: the registry image runs as a container and Docker's HEALTHCHECK calls it healthy --------
smoke_registry() {
  local name=flywheel-images-smoke-$$ port status="" deadline
  port=$(free_port)
  log "smoke: flywheel/registry as a container on 127.0.0.1:$port (read-only root, named volume)"
  docker run -d --name "$name" --network host --read-only --tmpfs /tmp \
    --mount "type=volume,src=$name,dst=/var/lib/flywheel" \
    -e "FLYWHEEL_REGISTRY_HOST=127.0.0.1" -e "FLYWHEEL_REGISTRY_PORT=$port" \
    "flywheel/registry:$(version_of registry)" >/dev/null
  deadline=$(( $(now) + 120 ))
  while (( $(now) < deadline )); do
    status=$(docker inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || echo gone)
    [[ $status == healthy || $status == gone ]] && break
    sleep 1
  done
  if [[ $status == healthy ]]; then
    # Its database and store work (no Kafka here: /readyz may say so, /v1/models must answer).
    python3 -c "import json, urllib.request; print('images: smoke: GET /v1/models ->', json.load(urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=5)))" \
      || status=broken
  fi
  [[ $status == healthy ]] || docker logs "$name" 2>&1 | tail -20
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$name" >/dev/null 2>&1 || true
  [[ $status == healthy ]] || die "smoke: the registry container is '$status', not healthy"
  log "smoke: Docker reports the registry container healthy"
}
[[ " ${SERVICES[*]} " == *" registry "* ]] && smoke_registry

log "done in $(( $(now) - T0 ))s:"
printf '  %s\n' "${summary[@]}"
