# Sourced by deploy/images/{build,smoke}.sh: `version_of`, `own_packages`, `image_packages`,
# `free_port`, and `engine`, which
# makes sure a Docker engine answers. Where
# none does but dockerd is installed (or installable from Debian, as root), it starts a private
# dockerd without touching the firewall (--iptables=false, no bridge: builds run with
# --network none, the smoke test with --network host); `stop_dockerd` stops exactly that one.
# Needs: log, die, $STATE.
version_of() {  # the version in services/<svc>/pyproject.toml (the image tag)
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "services/$1/pyproject.toml"
}

own_packages() {  # the workspace members an image installs (built as wheels into its context)
  case $1 in
    ingest) echo "shared examples/fraud services/ingest" ;;
    trainer) echo "shared examples/fraud services/trainer" ;;
    *) echo "shared services/$1" ;;
  esac
}

image_packages() {  # their distribution names: the Dockerfile's PACKAGES for that image
  local members=()
  read -r -a members <<<"$(own_packages "$1")"
  python3 -c 'import sys, tomllib; print(" ".join(tomllib.load(open(f"{m}/pyproject.toml", "rb"))["project"]["name"] for m in sys.argv[1:]))' \
    "${members[@]}"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

DOCKERD_PID=""
stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  log "stopping the dockerd this script started (pid $DOCKERD_PID)"
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  DOCKERD_PID=""
}

engine() {
  command -v docker >/dev/null || die "the docker CLI is not installed"
  if docker info >/dev/null 2>&1; then
    log "Docker engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null) (already running)"
    return
  fi
  if ! command -v dockerd >/dev/null; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null \
      || die "no Docker engine answers and dockerd is not installed (as root, 'apt-get install docker.io')"
    log "no Docker engine: apt-get install docker.io (its service is not started)"
    local added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
      added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io \
      >"$STATE/apt-docker.log" 2>&1 || { tail -20 "$STATE/apt-docker.log"; die "apt-get install docker.io failed"; }
    (( added )) && rm -f /usr/sbin/policy-rc.d
  fi
  [[ $(id -u) -eq 0 ]] || die "no Docker engine answers; start one (dockerd needs root)"
  log "no Docker engine answers: starting dockerd for this build (log: $STATE/dockerd.log)"
  # No iptables rules and no default bridge: builds run with --network none anyway, and the
  # host's firewall is left exactly as it was.
  dockerd --iptables=false --ip6tables=false --bridge=none \
    --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && { log "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) ready"; return; }
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$STATE/dockerd.log"; die "dockerd exited"; }
    sleep 0.5
  done
  die "dockerd did not answer within 60 s (see $STATE/dockerd.log)"
}

